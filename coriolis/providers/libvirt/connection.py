"""Connecting to a libvirt daemon from an endpoint's ``connection_info``.

``connection_info``::

    {"uri": "qemu:///system" | "qemu+ssh://user@host[:port]/system" | "qemu+tls://host/system",
     "ssh_private_key": str,        # qemu+ssh: the PEM private key (secret)
     "ssh_known_hosts": str|None,   # qemu+ssh: known_hosts lines; without: not verified
     "tls": {"ca_cert": str, "client_cert": str, "client_key": str},  # qemu+tls (PEM;
                                    # client_key is secret)
     "nbd_host": str|None,          # the address workers reach the host's NBD exports at
                                    # (remote hosts; default: the URI's host)
     "scratch_dir": str|None}       # on the host: backup scratch files and NBD sockets
                                    # (default /var/lib/libvirt/coriolis)

Secrets are written to a private temporary directory only for the life of a connection and
never appear in errors (libvirt's messages are scrubbed of them).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from coriolis import exceptions
from coriolis.system_modules import load_system_module

JSON = dict[str, Any]
DEFAULT_SCRATCH_DIR = "/var/lib/libvirt/coriolis"
_LOADING = threading.Lock()

CONNECTION_SCHEMA: JSON = {
    "$schema": "http://json-schema.org/draft-04/schema#",
    "type": "object",
    "properties": {
        "uri": {"type": "string", "minLength": 1,
                "description": "libvirt connection URI: qemu:///system, "
                               "qemu+ssh://user@host/system or qemu+tls://host/system"},
        "ssh_private_key": {"type": "string", "description": "PEM private key (qemu+ssh)"},
        "ssh_known_hosts": {"type": "string",
                            "description": "known_hosts lines of the host (qemu+ssh)"},
        "tls": {"type": "object", "properties": {
            "ca_cert": {"type": "string"}, "client_cert": {"type": "string"},
            "client_key": {"type": "string"}},
            "required": ["ca_cert", "client_cert", "client_key"],
            "additionalProperties": False},
        "nbd_host": {"type": "string",
                     "description": "address workers reach this host's NBD exports at"},
        "scratch_dir": {"type": "string",
                        "description": "folder on the host for backup scratch files and "
                                       "NBD sockets"},
    },
    "required": ["uri"],
    "additionalProperties": False,
}


def load_libvirt() -> ModuleType:
    """The ``libvirt`` module (libvirt-python), from this interpreter or the system's
    dist-packages (Debian ``python3-libvirt``); ``ProviderError`` saying what to install."""
    with _LOADING:
        try:
            import libvirt  # type: ignore[import-not-found]
            return libvirt  # type: ignore[no-any-return]
        except ImportError:
            pass
        module = load_system_module("libvirt", "libvirtmod")
        if module is None:
            raise exceptions.ProviderError(
                "the libvirt provider needs libvirt's Python bindings on this worker (Debian: "
                "apt-get install python3-libvirt)")
        return module


@contextlib.contextmanager
def connect(connection_info: JSON) -> Iterator[Any]:
    """An open ``virConnect`` for ``connection_info``, closed on exit.
    ``ConnectionValidationFailed``-free: raises ``ProviderError`` naming the URI (never a
    secret) when the daemon cannot be reached or refuses the credentials."""
    libvirt = load_libvirt()
    uri = connection_info["uri"]
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise exceptions.ProviderError(
            f"cannot connect to libvirt at {uri}: {exc.get_error_message()}") from None
    try:
        yield conn
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()
