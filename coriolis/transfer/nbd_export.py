"""The writer agent's native data path: a transfer's disk served as an NBD export over TLS.

On an open request asking for it (``"export": "nbd"``), the agent starts ``qemu-nbd`` on the
transfer's disk (already checked to be under its roots, with every file of the image) on a
TCP port of the address it listens on, with TLS and a pre-shared key made for this transfer
alone. The key goes back to the worker in the open reply (HTTPS with the pinned certificate,
after the agent key was checked); qemu-nbd reads it from ``keys.psk`` (0600) in a folder of
its own (0700), never from its command line. The worker writes with libnbd over several
connections, flushes through NBD, and then reports the flushed ranges to the agent
(``POST /v1/transfers/<id>/durable``), which adds them to the transfer's acknowledgement log
as it does for chunks sent over HTTPS: a resumed transfer skips exactly what was durable.

The export stops (qemu-nbd ends, the key file is removed) when the transfer is closed: on
DELETE (a finished copy), on ``POST .../release`` (a failed one, kept for resuming), when it
is re-opened (a sender presumed dead loses its connections with its key), when it is idle,
and when the agent stops.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from coriolis import exceptions
from coriolis.transfer.agent import RequestError, Transfer
from coriolis.transfer.base import Data

PSK_FILE = "keys.psk"  # the name qemu's tls-creds-psk reads in its ``dir``
START_SECONDS = 30.0
PORT_ATTEMPTS = 5
# GnuTLS negotiated ChaCha20-Poly1305 between libnbd and qemu-nbd (perf: a third of
# qemu-nbd's cycles in _nettle_chacha_core); AES-GCM runs in AES-NI at several GB/s.
TLS_PRIORITY = "NORMAL:-CHACHA20-POLY1305"


def available() -> bool:
    """Whether this host can serve NBD exports (qemu-nbd is installed)."""
    return shutil.which("qemu-nbd") is not None


def _virtual_size(path: str, fmt: str) -> int:
    proc = subprocess.run(["qemu-img", "info", "-U", "--output=json", "-f", fmt, path],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise exceptions.ProviderError(
            f"cannot read disk image {Path(path).name}: {proc.stderr.strip()}")
    return int(json.loads(proc.stdout)["virtual-size"])


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class TlsNbdExport:
    """``qemu-nbd`` serving one image on ``host`` over TLS with a fresh pre-shared key, for
    as long as it is open. Its ``details`` (port, export name, PSK identity and key) are what
    a client needs; they are secret and go only into the open reply."""

    def __init__(self, path: str, fmt: str, host: str, name: str,
                 connections: int = 8) -> None:
        self.path, self.fmt, self.name = path, fmt, name
        self.host = host
        self.identity = f"coriolis-{secrets.token_hex(4)}"
        self._psk = secrets.token_hex(32)
        self.size = _virtual_size(path, fmt)
        self._dir = tempfile.mkdtemp(prefix="coriolis-nbd-tls-")  # 0700
        fd = os.open(os.path.join(self._dir, PSK_FILE), os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                     0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{self.identity}:{self._psk}\n")
        self._proc: subprocess.Popen[bytes] | None = None
        try:
            for attempt in range(PORT_ATTEMPTS):
                self.port = _free_port(host)
                if self._start(connections) or attempt == PORT_ATTEMPTS - 1:
                    break
        except BaseException:
            self.close()
            raise

    def _start(self, connections: int) -> bool:
        """Start qemu-nbd on ``self.port``; False when another process took the port first."""
        cmd = ["qemu-nbd", "--persistent", f"--shared={connections}", "--bind", self.host,
               "--port", str(self.port), "--export-name", self.name, "-f", self.fmt,
               "--cache=writeback", "--discard=unmap",
               "--object", f"tls-creds-psk,id=tls0,endpoint=server,dir={self._dir},"
                           f"priority={TLS_PRIORITY}",
               "--tls-creds", "tls0", self.path]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_SECONDS
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        while True:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr \
                    else ""
                if "in use" in err:
                    return False
                raise exceptions.ProviderError(
                    f"qemu-nbd could not export {Path(self.path).name}: {err.strip()}")
            try:
                with socket.socket(family, socket.SOCK_STREAM) as probe:
                    probe.connect((self.host, self.port))
                return True
            except ConnectionRefusedError:
                pass
            if time.monotonic() > deadline:
                raise exceptions.ProviderError(
                    f"qemu-nbd did not start for {Path(self.path).name}")
            time.sleep(0.01)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def details(self) -> dict[str, Any]:
        return {"port": self.port, "export": self.name, "identity": self.identity,
                "psk": self._psk}

    # --- the DiskWriter a Transfer holds: the data goes over NBD, not through here ---------
    def write(self, offset: int, data: Data) -> None:
        raise RequestError(409, "this transfer is written through its NBD export")

    def zero(self, offset: int, length: int) -> None:
        raise RequestError(409, "this transfer is written through its NBD export")

    def read(self, offset: int, length: int) -> Data:
        raise RequestError(409, "this transfer is read through its NBD export")

    def flush(self) -> None:
        """Nothing: the worker flushes through NBD before it reports ranges as durable."""

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stderr:
                proc.stderr.close()
        shutil.rmtree(self._dir, ignore_errors=True)


class NbdTransfer(Transfer):
    """A transfer whose disk is written through a ``TlsNbdExport`` on ``host``."""

    export: TlsNbdExport

    def __init__(self, folder: Path, state: dict[str, Any], host: str) -> None:
        self.host = host
        super().__init__(folder, state)

    def _open_writer(self, state: dict[str, Any]) -> Any:
        self.export = TlsNbdExport(state["path"], state["format"], self.host, self.folder.name)
        return self.export

    def open_reply(self) -> dict[str, Any]:
        return {"nbd": self.export.details()}
