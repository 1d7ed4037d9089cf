"""Connecting to a libvirt daemon from an endpoint's ``connection_info``.

``connection_info``::

    {"uri": "qemu:///system" | "qemu+ssh://user@host[:port]/system" | "qemu+tls://host/system",
     "ssh_private_key": str,        # qemu+ssh: the PEM/OpenSSH private key (secret; required)
     "ssh_known_hosts": str|None,   # qemu+ssh: known_hosts lines; without: not verified
     "tls": {"ca_cert": str, "client_cert": str, "client_key": str},  # qemu+tls (PEM;
                                    # client_key is secret)
     "nbd_host": str|None,          # the address workers reach the host's NBD exports at
                                    # (remote hosts; default: the URI's host)
     "scratch_dir": str|None}       # on the host: backup scratch files and NBD sockets
                                    # (default /var/lib/libvirt/coriolis)

Transports: ``qemu`` / ``qemu+unix`` (this host's daemon), ``qemu+ssh``, ``qemu+tls`` and
``qemu+tcp``. The URI may carry only the query parameters in ``ALLOWED_PARAMS``: the others
(``keyfile``, ``pkipath``, ``command``, ``socket``...) would reach files or programs of the
worker, and are set here from ``connection_info``.

Secrets are written to a private temporary directory (0700, files 0600) only while a
connection opens (ssh authenticates, TLS handshakes then), removed whatever happens (and, after
a crash, by the next connection: ``sweep_private_dirs``), and never appear in errors:
libvirt's messages are scrubbed of them and of that directory's path, and the URI is shown
without its password and query (``display_uri``).

qemu+ssh runs OpenSSH through a small wrapper (libvirt's ``command`` parameter) that gives
ssh only the key of ``connection_info`` (``IdentitiesOnly``, no agent, no user ssh config)
and, with ``ssh_known_hosts``, strict host key checking against exactly those lines; libvirt's
own ``known_hosts`` parameter is honoured only by its libssh/libssh2 transports, not by
``qemu+ssh``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from coriolis import exceptions
from coriolis.system_modules import load_system_module

JSON = dict[str, Any]
DEFAULT_SCRATCH_DIR = "/var/lib/libvirt/coriolis"
TRANSPORTS = ("", "unix", "ssh", "tls", "tcp")
"""The transports of ``qemu[+transport]://`` URIs this provider opens."""
ALLOWED_PARAMS = frozenset({"mode", "proxy", "no_verify", "netcat", "tls_priority"})
"""The query parameters a URI may carry (the rest are set from ``connection_info``)."""
SSH_CONNECT_TIMEOUT = 20
_LOADING = threading.Lock()
_quiet = False

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
    dist-packages (Debian ``python3-libvirt``); ``ProviderError`` saying what to install.
    libvirt's default error printing (to stderr) is turned off: errors are raised."""
    global _quiet
    with _LOADING:
        try:
            import libvirt  # type: ignore[import-not-found]
            module: ModuleType | None = libvirt
        except ImportError:
            module = load_system_module("libvirt", "libvirtmod")
        if module is None:
            raise exceptions.ProviderError(
                "the libvirt provider needs libvirt's Python bindings on this worker (Debian: "
                "apt-get install python3-libvirt)")
        if not _quiet:
            module.registerErrorHandler(lambda _ctx, _err: None, None)
            _quiet = True
        return module


def lookup_domain(conn: Any, name: str) -> Any | None:
    """The domain ``name`` of ``conn``, None when there is none."""
    libvirt = load_libvirt()
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError:
        return None


def _parts(connection_info: JSON) -> tuple[str, Any]:
    """The transport of ``connection_info["uri"]`` and its ``urlsplit``; ``InvalidInput``
    naming ``connection_info.uri`` for anything but a ``qemu`` URI of a known transport."""
    uri = connection_info.get("uri") if isinstance(connection_info, dict) else None
    if not isinstance(uri, str) or not uri:
        raise exceptions.InvalidInput("connection_info.uri: a libvirt URI is required "
                                      "(qemu:///system, qemu+ssh://user@host/system...)")
    try:
        split = urlsplit(uri)
        split.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise exceptions.InvalidInput(f"connection_info.uri: not a URI ({exc})") from None
    driver, _, transport = split.scheme.partition("+")
    if driver != "qemu":
        raise exceptions.InvalidInput(
            f"connection_info.uri: the libvirt provider opens qemu URIs (qemu:///system, "
            f"qemu+ssh://, qemu+tls://), not '{split.scheme}://'")
    if transport not in TRANSPORTS:
        raise exceptions.InvalidInput(
            f"connection_info.uri: transport '{transport}' is not supported (use one of "
            f"{', '.join('qemu+' + t if t else 'qemu' for t in TRANSPORTS)})")
    if split.path not in ("/system", "/session"):
        raise exceptions.InvalidInput(
            f"connection_info.uri: the path must be /system or /session, not "
            f"'{split.path or '(none)'}'")
    bad = sorted({k for k, _ in parse_qsl(split.query, keep_blank_values=True)}
                 - ALLOWED_PARAMS)
    if bad:
        raise exceptions.InvalidInput(
            f"connection_info.uri: query parameter(s) {', '.join(bad)} not allowed (the "
            f"provider sets them from connection_info; allowed: "
            f"{', '.join(sorted(ALLOWED_PARAMS))})")
    if split.password is not None:
        raise exceptions.InvalidInput(
            "connection_info.uri: holds a password, which libvirt does not use (it would "
            "become part of the ssh user name); qemu+ssh takes connection_info."
            "ssh_private_key, qemu+tls connection_info.tls")
    if transport in ("", "unix") and split.hostname:
        raise exceptions.InvalidInput(
            f"connection_info.uri: a {split.scheme} URI names no host "
            f"({split.scheme}:///system); use qemu+ssh or qemu+tls for another host")
    if transport in ("ssh", "tls", "tcp") and not split.hostname:
        raise exceptions.InvalidInput(
            f"connection_info.uri: qemu+{transport} needs a host "
            f"(qemu+{transport}://host/system)")
    return transport, split


def transport_of(connection_info: JSON) -> str:
    """The URI's transport: "" (this host's daemon), "unix", "ssh", "tls" or "tcp";
    ``InvalidInput`` naming ``connection_info.uri`` for a URI this provider does not open."""
    return _parts(connection_info)[0]


def display_uri(connection_info: JSON) -> str:
    """The URI as errors and messages show it: no password, no query."""
    uri = connection_info.get("uri") if isinstance(connection_info, dict) else None
    try:
        split = urlsplit(str(uri))
        host = split.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = (f"{split.username}@" if split.username else "") + host
        if split.port is not None:
            netloc += f":{split.port}"
        return f"{split.scheme}://{netloc}{split.path}"
    except ValueError:
        return "(the connection_info.uri)"


LOOPBACK = ("localhost", "127.0.0.1", "::1")


def remote_host(connection_info: JSON) -> str | None:
    """The host of a URI that reaches another machine's daemon; None for this host's own
    (no host, or a loopback address)."""
    host = urlsplit(str(connection_info.get("uri", ""))).hostname
    return host if host and host not in LOOPBACK else None


def require_local(connection_info: JSON, what: str) -> None:
    """``ProviderError`` naming ``what`` and the host when the URI reaches another machine:
    disks move through files and unix sockets of the libvirt host, so the worker must run
    on it (``qemu:///system``) until NBD over TCP and a writer agent serve remote hosts."""
    host = remote_host(connection_info)
    if host is not None:
        raise exceptions.ProviderError(
            f"{what} on a remote libvirt host ({host}) is not supported yet: the worker must "
            "run on the host (qemu:///system)")


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    return path


def _ssh_wrapper(folder: Path, known_hosts: str | None) -> Path:
    """An executable that runs OpenSSH with only our options (they come first, so they win
    over those libvirt adds): no user config, only the given identity, no agent, our
    known_hosts file, strict checking when the caller gave host keys."""
    hosts_file = _write(folder, "known_hosts", known_hosts or "")
    options = ["-F", "/dev/null", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
               "-o", f"UserKnownHostsFile={hosts_file}",
               "-o", "GlobalKnownHostsFile=/dev/null",
               "-o", f"StrictHostKeyChecking={'yes' if known_hosts else 'no'}",
               "-o", "BatchMode=yes", "-o", "PasswordAuthentication=no",
               "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT}", "-o", "LogLevel=ERROR"]
    ssh = shutil.which("ssh") or "ssh"
    script = folder / "ssh"
    fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
    with os.fdopen(fd, "w") as f:
        f.write(f"#!/bin/sh\nexec {shlex.quote(ssh)} {shlex.join(options)} \"$@\"\n")
    return script


def open_uri(connection_info: JSON, folder: Path) -> tuple[str, list[str]]:
    """The URI libvirt is given for ``connection_info``, with the files the transport needs
    written into ``folder`` (a private directory), and the secret values to scrub from
    messages. ``InvalidInput`` naming the field for missing or misplaced credentials."""
    transport, split = _parts(connection_info)
    query = dict(parse_qsl(split.query, keep_blank_values=True))
    secrets: list[str] = []
    key = connection_info.get("ssh_private_key")
    tls = connection_info.get("tls")
    if transport != "ssh" and (key or connection_info.get("ssh_known_hosts")):
        raise exceptions.InvalidInput(
            "connection_info.ssh_private_key/ssh_known_hosts: only for qemu+ssh URIs")
    if transport != "tls" and tls:
        raise exceptions.InvalidInput("connection_info.tls: only for qemu+tls URIs")
    if transport == "ssh":
        if not isinstance(key, str) or not key.strip():
            raise exceptions.InvalidInput(
                "connection_info.ssh_private_key: a qemu+ssh endpoint needs the private key "
                "of the host's user (the worker's own keys are never used)")
        secrets.append(key.strip())
        query["keyfile"] = str(_write(folder, "id_key", key))
        query["command"] = str(_ssh_wrapper(folder, connection_info.get("ssh_known_hosts")))
        query["no_tty"] = "1"
        query.pop("no_verify", None)  # the wrapper decides (known hosts given or not)
    elif transport == "tls":
        if not isinstance(tls, dict):
            raise exceptions.InvalidInput(
                "connection_info.tls: a qemu+tls endpoint needs ca_cert, client_cert and "
                "client_key (PEM)")
        for field, name in (("ca_cert", "cacert.pem"), ("client_cert", "clientcert.pem"),
                            ("client_key", "clientkey.pem")):
            value = tls.get(field)
            if not isinstance(value, str) or not value.strip():
                raise exceptions.InvalidInput(f"connection_info.tls.{field}: PEM text needed")
            _write(folder, name, value)
        secrets.append(tls["client_key"].strip())
        query["pkipath"] = str(folder)
    params = f"?{urlencode(query)}" if query else ""
    return f"{split.scheme}://{split.netloc}{split.path}{params}", secrets


def scrub(message: str, secrets: list[str], folder: Path | None = None) -> str:
    """``message`` without the secret values (and their lines), nor the private folder."""
    for secret in secrets:
        message = message.replace(secret, "<secret>")
        for line in secret.splitlines():
            if len(line.strip()) >= 8:
                message = message.replace(line.strip(), "<secret>")
    if folder is not None:
        message = message.replace(str(folder), "<private dir>")
    return message


PRIVATE_PREFIX = "coriolis-libvirt-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_private_dirs() -> None:
    """Remove the private folders (``coriolis-libvirt-<pid>-*`` in the temp folder, ours)
    that a killed process left: a key must not outlive a crash."""
    for folder in Path(tempfile.gettempdir()).glob(f"{PRIVATE_PREFIX}*-*"):
        pid = folder.name[len(PRIVATE_PREFIX):].split("-", 1)[0]
        try:
            if (pid.isdigit() and not _alive(int(pid))
                    and folder.lstat().st_uid == os.getuid()):
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue  # removed meanwhile


@contextlib.contextmanager
def connect(connection_info: JSON) -> Iterator[Any]:
    """An open ``virConnect`` for ``connection_info``, closed on exit; the private directory
    of keys and certificates exists only while it opens. ``InvalidInput`` naming the field for a bad
    URI or missing credentials; ``ConnectionValidationFailed`` (a ``ProviderError``) naming
    the URI (``display_uri``) and libvirt's reason when the daemon cannot be reached or
    refuses the credentials. No message contains a secret."""
    libvirt = load_libvirt()
    shown = display_uri(connection_info)
    sweep_private_dirs()
    folder = Path(tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{os.getpid()}-"))
    try:
        uri, secrets = open_uri(connection_info, folder)
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            reason = scrub(str(exc.get_error_message() or exc), secrets, folder)
            raise exceptions.ConnectionValidationFailed(
                f"cannot connect to libvirt at {shown}: {reason}") from None
    finally:
        # The key and certificates are read while the connection opens (ssh authenticates,
        # TLS handshakes): they leave the disk as soon as it is open or failed.
        shutil.rmtree(folder, ignore_errors=True)
    try:
        yield conn
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()
