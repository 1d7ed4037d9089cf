"""Where an export's NBD unix sockets are: a short folder per export folder under
``SOCKET_ROOT`` (a unix socket path is limited to 107 bytes, which a ``scratch_dir`` deep in
a file tree exceeds), named by a hash of the export folder's path so that each export folder
has exactly one and finding "our" sockets stays a comparison of folders."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

SOCKET_ROOT = Path("/run/coriolis-libvirt")


def socket_folder(folder: Path) -> Path:
    """The socket folder of export folder ``folder`` (not created here)."""
    return SOCKET_ROOT / hashlib.sha256(str(folder).encode()).hexdigest()[:16]


def make_socket_folder(folder: Path) -> Path:
    """Create (0700, reachable through ``SOCKET_ROOT`` 0711) and return it."""
    SOCKET_ROOT.mkdir(parents=True, exist_ok=True)
    os.chmod(SOCKET_ROOT, 0o711)  # explicit: the server's umask is 077
    sockets = socket_folder(folder)
    sockets.mkdir(mode=0o700, exist_ok=True)
    return sockets


def remove_socket_folder(folder: Path) -> None:
    shutil.rmtree(socket_folder(folder), ignore_errors=True)
