"""How the dashboard's login form becomes a Keystone token: from the embedded identity (the
same code as ``POST /identity/v3/auth/tokens``) or, when ``[keystone]`` is configured, from
that Keystone through keystoneauth1 (Keystone v3 password authentication, project-scoped:
https://docs.openstack.org/api-ref/identity/v3/#password-authentication-with-scoped-authorization).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from coriolis import exceptions
from coriolis.identity import keystone
from coriolis.identity.tokens import TokenIssuer
from coriolis.identity.validation import EmbeddedValidator

# (user name, password, project name, domain name) -> (token, expires_at epoch seconds)
Login = Callable[[str, str, str, str], tuple[str, float]]

BAD_CREDENTIALS = "The user name, password or project is wrong"


def embedded_login(db: Any, issuer: TokenIssuer, validator: EmbeddedValidator) -> Login:
    """Tokens of the embedded identity; the domain is ignored (it has only ``Default``).
    ``Unauthorized`` (401) for wrong credentials, an unknown project or no role on it."""
    def login(user: str, password: str, project: str, domain: str) -> tuple[str, float]:
        try:
            token, data = keystone.issue(db, issuer, validator, user_name=user,
                                         password=password, project_name=project)
        except exceptions.Unauthorized:
            raise exceptions.Unauthorized(BAD_CREDENTIALS) from None
        return token, data.expires_at
    return login


def keystone_login(auth_url: str, timeout: float = 30.0) -> Login:
    """Tokens of a real Keystone (v3 password method, user and project in ``domain``).
    ``Unauthorized`` (401) when Keystone refuses, ``CoriolisError`` (500) when it cannot be
    reached; neither repeats the password."""
    def login(user: str, password: str, project: str, domain: str) -> tuple[str, float]:
        auth = v3.Password(auth_url=auth_url, username=user, password=password,
                           user_domain_name=domain, project_name=project,
                           project_domain_name=domain)
        session = ks_session.Session(auth=auth, timeout=timeout)
        try:
            access = auth.get_access(session)
        except ks_exceptions.Unauthorized:
            raise exceptions.Unauthorized(BAD_CREDENTIALS) from None
        except ks_exceptions.ClientException as exc:
            raise exceptions.CoriolisError(
                f"Keystone at {auth_url} is unreachable: {type(exc).__name__}") from None
        if not access.auth_token or access.expires is None:
            raise exceptions.CoriolisError(f"Keystone at {auth_url} issued no usable token")
        return access.auth_token, access.expires.timestamp()
    return login
