"""Logging in to vCenter or ESXi with pyVmomi, and the datastore HTTP interface.

Connection info (the seed's VMware example, plus a CA bundle or a pinned thumbprint)::

    {"host": str, "port": int (443), "username": str, "password": str,
     "allow_untrusted": bool (false),   # accept any certificate (self-signed labs)
     "ca_bundle": str|None,             # PEM text of the CAs to trust instead of the system's
     "thumbprint": str|None}            # SHA-1 or SHA-256 of the server certificate, pinned

Platform doc: vSphere Web Services API, ``SessionManager.Login``, ``ServiceContent.about``;
datastore HTTP access ("Datastore File Access", ``https://HOST/folder/PATH?dcPath=DC&
dsName=DS``), which vCenter and ESXi both serve with the SOAP session's cookie.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

from coriolis import exceptions

JSON = dict[str, Any]
DRAFT = "http://json-schema.org/draft-04/schema#"

CONNECTION_SCHEMA: JSON = {
    "$schema": DRAFT, "type": "object",
    "properties": {
        "host": {"type": "string", "minLength": 1,
                 "description": "vCenter or ESXi host name or address"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 443},
        "username": {"type": "string", "minLength": 1},
        "password": {"type": "string"},
        "allow_untrusted": {"type": "boolean", "default": False,
                            "description": "accept a certificate no CA vouches for"},
        "ca_bundle": {"type": ["string", "null"],
                      "description": "PEM certificates of the CAs to trust"},
        "thumbprint": {"type": ["string", "null"],
                       "description": "SHA-1 or SHA-256 fingerprint of the server "
                                      "certificate (hex, colons optional), pinned"},
    },
    "required": ["host", "username", "password"],
    "additionalProperties": False,
}


def _thumbprint(connection_info: JSON) -> str | None:
    value = connection_info.get("thumbprint")
    if not value:
        return None
    digest = str(value).replace(":", "").strip().lower()
    if len(digest) not in (40, 64) or any(c not in "0123456789abcdef" for c in digest):
        raise exceptions.InvalidInput(
            "connection_info.thumbprint must be a SHA-1 or SHA-256 fingerprint in hex")
    return digest


def ssl_context(connection_info: JSON) -> ssl.SSLContext:
    """How the server's certificate is checked: a pinned thumbprint (checked after the
    handshake by the caller), ``allow_untrusted`` (not at all), ``ca_bundle``, or the
    system's CAs."""
    if _thumbprint(connection_info) or connection_info.get("allow_untrusted"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    bundle = connection_info.get("ca_bundle")
    if bundle:
        try:
            return ssl.create_default_context(cadata=bundle)
        except ssl.SSLError:
            raise exceptions.InvalidInput(
                "connection_info.ca_bundle is not PEM certificates") from None
    return ssl.create_default_context()


def check_thumbprint(connection_info: JSON) -> None:
    """With a pinned ``thumbprint``, fetch the server's certificate and compare;
    ``ConnectionValidationFailed`` naming both fingerprints' kind when they differ."""
    pinned = _thumbprint(connection_info)
    if not pinned:
        return
    host, port = connection_info["host"], int(connection_info.get("port") or 443)
    context = ssl_context(connection_info)
    try:
        with socket.create_connection((host, port), timeout=15) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True) or b""
    except OSError as exc:
        raise exceptions.ConnectionValidationFailed(
            f"cannot reach {host}:{port}: {exc.strerror or exc}") from None
    algo = hashlib.sha1 if len(pinned) == 40 else hashlib.sha256
    if algo(der).hexdigest() != pinned:
        raise exceptions.ConnectionValidationFailed(
            f"the certificate of {host}:{port} does not match connection_info.thumbprint")


@contextlib.contextmanager
def connect(connection_info: JSON) -> Iterator[Any]:
    """A logged-in ``ServiceInstance``, logged out at the end. Errors (never with the
    password): ``ConnectionValidationFailed`` for a wrong login, an untrusted certificate
    (saying which fields allow it) or an unreachable host."""
    host = connection_info.get("host")
    port = int(connection_info.get("port") or 443)
    where = f"{host}:{port}"
    check_thumbprint(connection_info)
    try:
        si = SmartConnect(host=host, port=port, user=connection_info.get("username"),
                          pwd=connection_info.get("password", ""),
                          sslContext=ssl_context(connection_info), connectionPoolTimeout=60)
    except vim.fault.InvalidLogin:
        raise exceptions.ConnectionValidationFailed(
            f"{where}: wrong username or password (connection_info.username, "
            "connection_info.password)") from None
    except ssl.SSLCertVerificationError as exc:
        raise exceptions.ConnectionValidationFailed(
            f"{where}: the server certificate is not trusted ({exc.verify_message}); "
            "set connection_info.ca_bundle or connection_info.thumbprint, or "
            "connection_info.allow_untrusted") from None
    except (OSError, vmodl.MethodFault) as exc:
        reason = getattr(exc, "msg", None) or getattr(exc, "strerror", None) or type(exc).__name__
        raise exceptions.ConnectionValidationFailed(f"cannot log in to {where}: {reason}") \
            from None
    try:
        yield si
    finally:
        with contextlib.suppress(Exception):
            Disconnect(si)


def describe(si: Any) -> str:
    """``"vCenter Server 6.5.0 (build 5973321) at host:port"``-like sentence."""
    about = si.content.about
    kind = "vCenter" if about.apiType == "VirtualCenter" else "ESXi"
    return f"{kind}: {about.fullName} (API {about.apiVersion})"


def wait_task(si: Any, task: Any, what: str, timeout: float = 600) -> Any:
    """Wait for ``task`` and return its result; ``ProviderError`` naming ``what`` with the
    fault's message. Reads ``info`` through the PropertyCollector (pyVmomi 9's
    ``WaitForTask`` rejects some results vcsim returns)."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        # info.state and info.error, not info: pyVmomi 9 rejects the whole ``info`` of some
        # vcsim tasks (a snapshot as the task's ``entity``)
        state = get_property(si, task, "info.state")
        if state == "success":
            try:
                return get_property(si, task, "info.result")
            except TypeError:
                return None  # a result pyVmomi cannot type: the caller looks it up
        if state == "error":
            fault = get_property(si, task, "info.error")
            message = getattr(fault, "msg", None) or type(fault).__name__
            raise exceptions.ProviderError(f"{what} failed: {message}")
        if time.monotonic() > deadline:
            raise exceptions.ProviderError(f"{what} did not finish in {timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def get_property(si: Any, obj: Any, name: str) -> Any:
    """One property of a managed object through the PropertyCollector, None when unset
    (reading an unset property directly crashes vcsim 0.24)."""
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=obj)],
        propSet=[vmodl.query.PropertyCollector.PropertySpec(type=obj.__class__,
                                                             pathSet=[name])])
    found = si.content.propertyCollector.RetrieveContents([spec])
    for item in found or []:
        for prop in item.propSet or []:
            if prop.name == name:
                return prop.val
    return None


def session_cookie(si: Any) -> str:
    """The SOAP session's cookie (``vmware_soap_session=...``) for /folder requests."""
    cookie = si._stub.cookie or ""
    return cookie.split(";")[0]


def split_datastore_path(path: str) -> tuple[str, str]:
    """``"[ds] folder/file.vmdk"`` -> ``("ds", "folder/file.vmdk")``; ``InvalidInput``
    otherwise."""
    if not path.startswith("[") or "]" not in path:
        raise exceptions.InvalidInput(f"'{path}' is not a datastore path")
    ds, rest = path[1:].split("]", 1)
    return ds, rest.strip()


def folder_url(connection_info: JSON, datacenter: str, datastore: str, path: str) -> str:
    """The datastore HTTP URL of a file (``/folder/<path>?dcPath=&dsName=``)."""
    host, port = connection_info["host"], int(connection_info.get("port") or 443)
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    query = urllib.parse.urlencode({"dcPath": datacenter, "dsName": datastore})
    return f"https://{netloc}/folder/{urllib.parse.quote(path)}?{query}"
