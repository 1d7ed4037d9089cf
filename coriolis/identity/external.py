"""Tokens of a real Keystone: validated against it (GET /v3/auth/tokens, as
keystonemiddleware does) with the Coriolis service user's credentials from ``[keystone]``,
and cached for ``cache_seconds`` (default 30) so that one request does not cost two.

A revoked token therefore stops working within ``cache_seconds``; an expired one at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from typing import Any

from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from coriolis import exceptions
from coriolis.identity.tokens import TokenData


def service_session(conf: dict[str, str], trust_id: str | None = None) -> ks_session.Session:
    """A keystoneauth1 session of the Coriolis service user (or, with ``trust_id``, of the
    trust a user gave it)."""
    scope: dict[str, Any] = {"trust_id": trust_id} if trust_id else {
        "project_name": conf["project_name"],
        "project_domain_name": conf.get("project_domain_name", "Default")}
    auth = v3.Password(auth_url=conf["auth_url"], username=conf["username"],
                       password=conf["password"],
                       user_domain_name=conf.get("user_domain_name", "Default"), **scope)
    return ks_session.Session(auth=auth, timeout=float(conf.get("timeout", "30")))


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class KeystoneValidator:
    def __init__(self, conf: dict[str, str]) -> None:
        self.conf = conf
        self.auth_url = conf["auth_url"].rstrip("/")
        self.cache_seconds = float(conf.get("cache_seconds", "30"))
        self._session = service_session(conf)
        self._cache: dict[str, tuple[float, TokenData]] = {}
        self._lock = threading.Lock()

    def validate(self, token: str | None) -> TokenData:
        if not token:
            raise exceptions.Unauthorized("Authentication required: no X-Auth-Token given")
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.time()
        with self._lock:
            cached = self._cache.get(key)
        if cached and cached[0] > now and cached[1].expires_at > now:
            return cached[1]
        data = self._ask_keystone(token)
        with self._lock:
            if len(self._cache) > 10000:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            self._cache[key] = (now + self.cache_seconds, data)
        return data

    def _ask_keystone(self, token: str) -> TokenData:
        try:
            resp = self._session.get(f"{self.auth_url}/auth/tokens",
                                     headers={"X-Subject-Token": token}, raise_exc=False)
        except ks_exceptions.ClientException as exc:
            raise exceptions.CoriolisError(
                f"Keystone at {self.auth_url} is unreachable: {type(exc).__name__}") from None
        if resp.status_code in (401, 404):
            raise exceptions.Unauthorized("The token is invalid, expired or revoked")
        if resp.status_code != 200:
            raise exceptions.CoriolisError(
                f"Keystone at {self.auth_url} answered {resp.status_code} to a token check")
        body = resp.json()["token"]
        project = body.get("project")
        if not project:
            raise exceptions.Unauthorized("The token is not scoped to a project")
        return TokenData(body["user"]["id"], body["user"]["name"], project["id"],
                         project["name"], tuple(r["name"] for r in body.get("roles", [])),
                         _epoch(body["issued_at"]), _epoch(body["expires_at"]))
