"""Connecting to an OpenStack cloud: the endpoint's ``connection_info``, a keystoneauth1
session and an openstacksdk ``Connection`` over it, and errors without secrets.

``connection_info``::

    {"auth_url": "https://keystone:5000/v3",
     "username": str, "password": str,              # password authentication, or
     "application_credential_id": str,              # an application credential
     "application_credential_secret": str,
     "project_name": str, "user_domain_name": str (Default),
     "project_domain_name": str (Default), "region_name": str|None,
     "interface": "public"|"internal"|"admin" (public),
     "cacert": PEM text|None, "allow_untrusted": bool (false),
     "nfs_mount_point_base": str|None}

``nfs_mount_point_base``: where this worker's host has Cinder's NFS shares mounted, each at
``<base>/<md5 of the share>`` as os-brick and the Cinder NFS driver mount them
(``nfs_mount_point_base`` of cinder.conf / os-brick). With it, destination volumes are
written and source volumes read as files under that mount (``driver_volume_type`` ``nfs``
of ``os-initialize_connection``); the server allows only bases it was told of
(``check_location``).

Sources: keystoneauth1 ``identity.v3.Password`` / ``ApplicationCredential`` and
``session.Session`` (docs.openstack.org/keystoneauth), openstacksdk
``connection.Connection(session=...)`` (docs.openstack.org/openstacksdk).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from coriolis import exceptions

JSON = dict[str, Any]
SECRET_FIELDS = ("password", "application_credential_secret")
SERVICES = (("compute", "Nova (compute)"), ("block-storage", "Cinder (volumev3)"),
            ("network", "Neutron (network)"), ("image", "Glance (image)"))

_NAME = {"type": "string", "minLength": 1}
CONNECTION_SCHEMA: JSON = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "auth_url": {"type": "string", "minLength": 1, "pattern": "^https?://",
                     "description": "Keystone v3 URL"},
        "username": _NAME,
        "password": {"type": "string", "minLength": 1},
        "application_credential_id": _NAME,
        "application_credential_secret": {"type": "string", "minLength": 1},
        "project_name": _NAME,
        "project_id": _NAME,
        "user_domain_name": _NAME,
        "project_domain_name": _NAME,
        "region_name": {"type": ["string", "null"]},
        "interface": {"type": "string", "enum": ["public", "internal", "admin"]},
        "cacert": {"type": ["string", "null"],
                   "description": "PEM certificate(s) of the CA to trust"},
        "allow_untrusted": {"type": "boolean",
                            "description": "Skip TLS certificate checks"},
        "nfs_mount_point_base": {"type": ["string", "null"],
                                 "description": "Where this server's hosts mount Cinder's "
                                                "NFS shares (<base>/<md5 of the share>)"},
        "timeout": {"type": "integer", "minimum": 10,
                    "description": "Seconds to wait for a volume or server (default 600)"},
    },
    "required": ["auth_url"],
    "anyOf": [{"required": ["username", "password"]},
              {"required": ["application_credential_id", "application_credential_secret"]}],
    "additionalProperties": False,
}


def secrets_of(connection_info: JSON) -> list[str]:
    return [str(connection_info[k]) for k in SECRET_FIELDS if connection_info.get(k)]


def scrub(text: object, connection_info: JSON) -> str:
    """``text`` with every secret of ``connection_info`` masked."""
    out = str(text)
    for secret in secrets_of(connection_info):
        out = out.replace(secret, "***")
    return out


def describe(connection_info: JSON) -> str:
    """"user@project at auth_url" (no secret) for messages."""
    who = connection_info.get("username") or (
        f"application credential {connection_info.get('application_credential_id')}")
    project = connection_info.get("project_name") or connection_info.get("project_id")
    text = f"{who} at {connection_info.get('auth_url')}"
    return f"{who} (project {project}) at {connection_info.get('auth_url')}" if project \
        else text


def timeout_of(connection_info: JSON) -> int:
    return int(connection_info.get("timeout") or 600)


def _auth(connection_info: JSON) -> Any:
    from keystoneauth1.identity import v3

    url = str(connection_info["auth_url"]).rstrip("/")
    if connection_info.get("application_credential_id"):
        return v3.ApplicationCredential(
            auth_url=url,
            application_credential_id=connection_info["application_credential_id"],
            application_credential_secret=str(connection_info.get(
                "application_credential_secret")))
    if not connection_info.get("username") or not connection_info.get("password"):
        raise exceptions.InvalidInput(
            "connection_info needs username and password, or application_credential_id and "
            "application_credential_secret")
    project: JSON = {}
    if connection_info.get("project_id"):
        project["project_id"] = connection_info["project_id"]
    elif connection_info.get("project_name"):
        project["project_name"] = connection_info["project_name"]
        project["project_domain_name"] = connection_info.get("project_domain_name",
                                                             "Default")
    return v3.Password(auth_url=url, username=connection_info["username"],
                       password=connection_info["password"],
                       user_domain_name=connection_info.get("user_domain_name", "Default"),
                       **project)


@contextlib.contextmanager
def session(connection_info: JSON) -> Iterator[Any]:
    """A keystoneauth1 session for the endpoint (its CA written to a private temporary
    file for as long as the session lives)."""
    from keystoneauth1 import session as ks_session

    cafile = None
    try:
        verify: bool | str = not connection_info.get("allow_untrusted", False)
        if connection_info.get("cacert") and verify:
            fd, cafile = tempfile.mkstemp(prefix="coriolis-os-ca-", suffix=".pem")
            with os.fdopen(fd, "w") as f:
                f.write(str(connection_info["cacert"]))
            verify = cafile
        yield ks_session.Session(auth=_auth(connection_info), verify=verify,
                                 app_name="coriolis")
    finally:
        if cafile:
            with contextlib.suppress(OSError):
                os.unlink(cafile)


@contextlib.contextmanager
def connect(connection_info: JSON) -> Iterator[Any]:
    """An openstacksdk ``Connection`` on the endpoint's session; nothing read from the
    environment or clouds.yaml. Keystone and transport errors become
    ``ConnectionValidationFailed`` naming the user and auth URL (never a secret)."""
    import openstack.connection
    from keystoneauth1 import exceptions as ks_exc

    with session(connection_info) as sess:
        conn = openstack.connection.Connection(
            session=sess, region_name=connection_info.get("region_name") or None,
            interface=connection_info.get("interface") or "public",
            block_storage_api_version="3", identity_api_version="3")
        try:
            yield conn
        except ks_exc.Unauthorized:
            raise exceptions.ConnectionValidationFailed(
                f"Keystone refused the credentials of {describe(connection_info)}") from None
        except ks_exc.ConnectFailure as exc:
            raise exceptions.ConnectionValidationFailed(
                f"cannot reach {connection_info.get('auth_url')}: "
                f"{scrub(exc, connection_info)}") from None
        except ks_exc.EndpointNotFound as exc:
            raise exceptions.ConnectionValidationFailed(
                f"the catalog of {describe(connection_info)} lacks a service: "
                f"{scrub(exc, connection_info)}") from None
        finally:
            with contextlib.suppress(Exception):
                conn.close()


def http_error(exc: BaseException, what: str, connection_info: JSON) -> exceptions.CoriolisError:
    """An openstacksdk error as a Coriolis one naming ``what``: a 400/404/409/413 (bad
    request, missing, conflict, quota) is ``InvalidInput``, anything else ``ProviderError``."""
    status = getattr(exc, "status_code", None)
    detail = getattr(exc, "details", None) or str(exc)
    text = f"{what}: {scrub(detail, connection_info)}"
    if status in (400, 404, 409, 413):
        if status == 413 or "quota" in str(detail).lower():
            text = f"{what}: quota exceeded ({scrub(detail, connection_info)})"
        return exceptions.InvalidInput(text)
    return exceptions.ProviderError(text)


def share_folder(base: str, export: str) -> str:
    """The folder where os-brick / the Cinder NFS driver mount ``export`` under ``base``:
    ``<base>/<md5 hex of the share string>``."""
    return os.path.join(base, hashlib.md5(export.encode(), usedforsecurity=False).hexdigest())
