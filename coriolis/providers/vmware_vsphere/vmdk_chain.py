"""Sparse and snapshot-delta VMDKs, read by qemu's vmdk driver over the datastore HTTP
interface.

A disk that is not one flat extent (``monolithicSparse``, ``streamOptimized``,
``twoGbMaxExtentSparse``, a ``vmfsSparse`` or ``seSparse`` delta of a VM with snapshots, and
any chain of these through ``parentFileNameHint``) is mirrored into a private local folder
laid out like its datastore (``<root>/<datastore>/<path>``):

- a text descriptor is downloaded (a few hundred bytes);
- every other file (a sparse or flat extent, a sparse file with an embedded descriptor) is a
  read-only ``nbdfuse`` mount of ``nbdkit``'s curl plugin, which answers each read with a
  ranged GET on ``/folder`` (the session cookie passed as ``cookie=+FILE`` from a 0600 file
  that is deleted once nbdkit has read it: never on a command line). The mount keeps its
  page cache across opens (``kernel_cache``: the snapshot froze the file), so what
  ``qemu-img map`` read is not fetched again by ``qemu-nbd``.

qemu's vmdk driver (``qemu-img``, ``qemu-nbd``) then opens the top descriptor there and
follows extents and parents by their own relative names; it reads grain directories and
tables and only the grains asked for, so only allocated data crosses the network. qemu 7.2
reads ``vmfsSparse`` (COWD) and ``seSparse`` extents (read-only, which is all an export
needs).

Files as recorded in a location (``chain_files``)::

    {"top": "dir/disk-000001.vmdk",
     "text": {"dir/disk-000001.vmdk": "<descriptor text>", ...},
     "binary": ["dir/disk-000001-delta.vmdk", "dir/disk-flat.vmdk", ...]}

Platform doc: VMware Virtual Disk Format 1.1 (descriptor, extent lines, parentFileNameHint);
nbdkit-curl-plugin(1), nbdkit-stats-filter(1), nbdfuse(1); qemu ``block/vmdk.c``.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from coriolis import exceptions
from coriolis import leftovers as owned_folders
from coriolis.transfer.base import Data, Extent
from coriolis.transfer.nbd import NbdImageReader

JSON = dict[str, Any]
# (access, sectors, type, file name or None for ZERO)
EXTENT_LINE = re.compile(
    r'^\s*(RW|RDONLY|NOACCESS)\s+(\d+)\s+([A-Za-z]+)(?:\s+"([^"]+)")?', re.M)
PARENT_HINT = re.compile(r'^\s*parentFileNameHint\s*=\s*"([^"]*)"', re.M)
CREATE_TYPE = re.compile(r'^\s*createType\s*=\s*"([^"]+)"', re.M)
READABLE_EXTENTS = {"FLAT", "VMFS", "SPARSE", "VMFSSPARSE", "SESPARSE", "ZERO"}
BINARY_MAGIC = (b"KDMV", b"COWD")
DESCRIPTOR_LIMIT = 64 * 1024
MOUNT_TIMEOUT = 30.0
#: fetch(datastore-relative path, at most n bytes) -> the file's first bytes
Fetch = Callable[[str, int], bytes]


def is_text_descriptor(head: bytes) -> bool:
    """A VMDK text descriptor (not a binary sparse file, an extent or a COWD delta)."""
    if head[:4] in BINARY_MAGIC:
        return False
    text = head.split(b"\0", 1)[0]  # qemu pads its descriptors with NULs
    return b"createType" in text or text.lstrip().startswith(b"# Disk DescriptorFile")


def create_type(text: str) -> str | None:
    found = CREATE_TYPE.search(text)
    return found.group(1) if found else None


def _resolve(folder: str, name: str, what: str, role: str) -> str:
    """``name`` relative to ``folder`` in the same datastore; ``ProviderError`` for an
    absolute path (``/vmfs/volumes/...``, a linked clone's parent elsewhere) or one that
    leaves the datastore."""
    joined = posixpath.normpath(posixpath.join(folder, name))
    if name.startswith("/") or joined.startswith("../") or joined == "..":
        raise exceptions.ProviderError(
            f"{what}: its {role} '{name}' is outside the disk's datastore folder; only "
            "chains within one datastore are read")
    return joined


def discover(top: str, fetch: Fetch, backing_of: Callable[[str], str | None],
             what: str) -> JSON:
    """The files of the disk whose descriptor is ``top`` (datastore-relative), top first, as
    ``chain_files``. ``backing_of(path)`` answers the parent hint of a binary file with an
    embedded descriptor (qemu reads it once the file is mounted). ``ProviderError`` naming
    the disk for an extent kind qemu cannot read over HTTP (``VMFSRDM``, ``VMFSRAW``) or a
    parent outside the datastore."""
    files: JSON = {"top": top, "text": {}, "binary": []}
    pending, seen = [top], set()
    while pending:
        path = pending.pop(0)
        if path in seen:
            raise exceptions.ProviderError(f"{what}: {path} is its own ancestor")
        seen.add(path)
        head = fetch(path, DESCRIPTOR_LIMIT)
        folder = posixpath.dirname(path)
        if not is_text_descriptor(head):
            files["binary"].append(path)
            parent = backing_of(path)
        else:
            text = head.decode("utf-8", "replace").split("\0", 1)[0]
            files["text"][path] = text
            for _access, _sectors, kind, name in EXTENT_LINE.findall(text):
                if kind.upper() not in READABLE_EXTENTS:
                    raise exceptions.ProviderError(
                        f"{what}: extent kind {kind} in {path} (a raw device mapping) "
                        "cannot be read through the datastore")
                if name:
                    extent = _resolve(folder, name, what, "extent")
                    if extent not in files["binary"]:
                        files["binary"].append(extent)
            hint = PARENT_HINT.search(text)
            parent = hint.group(1) if hint else None
        if parent:
            pending.append(_resolve(folder, parent, what, "parent"))
    return files


UNITS = {"B": 1, "bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
STATS_READ = re.compile(r"^read: \d+ ops, [\d.]+ s, ([\d.]+) (B|bytes|KiB|MiB|GiB|TiB)\b",
                        re.M)


def _stats_bytes(statsfile: Path) -> int:
    """Bytes read (to nbdkit's three significant digits), from its stats filter's
    ``read: N ops, T s, 1.07 MiB, ...`` line; 0 when it read nothing."""
    with contextlib.suppress(OSError):
        found = STATS_READ.search(statsfile.read_text())
        if found:
            return int(float(found.group(1)) * UNITS[found.group(2)])
    return 0


def _fuse_unmount(mountpoint: Path) -> None:
    subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True,
                   check=True)


def reap_stale_mirrors(base: Path | None = None) -> list[Path]:
    """Remove the mirrors (under ``base``, default the temporary directory) of processes that
    died while reading, e.g. a killed worker: their nbdfuse/nbdkit processes killed, their
    FUSE mounts lazily unmounted, their folders deleted. Returns the folders removed."""
    return owned_folders.reap("coriolis-vmdk-*", _fuse_unmount, base)


class Mirror:
    """The private local folder a chain is opened from (0700), with a mount per binary
    file. ``url_of(path)`` is the file's ``/folder`` URL, ``curl_args`` nbdkit curl's TLS
    parameters (``sslverify=false`` or ``cainfo=FILE``), ``cookie`` the session's cookie."""

    def __init__(self, datastore: str, url_of: Callable[[str], str], cookie: str,
                 tls: dict[str, str], what: str) -> None:
        reap_stale_mirrors()
        self.root = Path(tempfile.mkdtemp(prefix="coriolis-vmdk-"))
        owned_folders.claim(self.root)
        self._datastore, self._url_of, self._what = datastore, url_of, what
        self._cookie, self._tls = cookie, tls
        self._mounts: list[tuple[Path, subprocess.Popen[bytes]]] = []
        self._stats: list[Path] = []
        self.bytes_fetched = 0
        if tls.get("ca_bundle"):
            (self.root / "ca.pem").write_text(tls["ca_bundle"])

    def local(self, path: str) -> Path:
        return self.root / "ds" / self._datastore / path

    def add_text(self, path: str, text: str) -> None:
        target = self.local(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def add_binary(self, path: str) -> None:
        """Mount ``path`` (nbdkit curl under nbdfuse) and link it into the mirror."""
        index = len(self._mounts)
        mountpoint = self.root / "mnt" / str(index)
        mountpoint.mkdir(parents=True)
        cookie_file = self.root / f"cookie-{index}"
        fd = os.open(cookie_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self._cookie)
        statsfile = self.root / f"stats-{index}"
        name = posixpath.basename(path)
        tls = (["sslverify=false"] if self._tls.get("sslverify") == "false" else []) + \
            ([f"cainfo={self.root / 'ca.pem'}"] if self._tls.get("ca_bundle") else [])
        cmd = ["nbdfuse", "-r", "-o", "kernel_cache", str(mountpoint / name), "--command",
               "nbdkit", "-s", "-r", "--filter=stats", "curl", f"url={self._url_of(path)}",
               f"cookie=+{cookie_file}", "timeout=120", f"statsfile={statsfile}", *tls]
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
        except FileNotFoundError as exc:
            raise exceptions.ProviderError(
                f"{self._what}: reading a sparse VMDK needs {exc.filename} "
                "(apt install nbdkit libnbd-bin fuse3)") from None
        self._mounts.append((mountpoint, proc))
        self._stats.append(statsfile)
        try:
            self._wait_mounted(mountpoint / name, proc, path)
        finally:
            cookie_file.unlink(missing_ok=True)
        link = self.local(path)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(mountpoint / name)

    def _wait_mounted(self, file: Path, proc: subprocess.Popen[bytes], path: str) -> None:
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                # nbdkit's own error (the curl plugin's) says more than nbdfuse's last line
                lines = [line for line in err.splitlines() if line.strip()]
                curl = [line for line in lines if "curl" in line and "error" in line]
                reason = (curl or lines or [f"exit {proc.returncode}"])[-1]
                if "404" in err:
                    reason = "missing on its datastore"
                raise exceptions.ProviderError(
                    f"{self._what}: [{self._datastore}] {path}: {reason}")
            with contextlib.suppress(OSError):
                if file.is_file():
                    return
            if time.monotonic() > deadline:
                raise exceptions.ProviderError(
                    f"{self._what}: [{self._datastore}] {path} could not be mounted in "
                    f"{MOUNT_TIMEOUT:.0f} s")
            time.sleep(0.05)

    def close(self) -> None:
        """Unmount everything, remove the folder, total ``bytes_fetched`` (nbdkit writes its
        stats when it exits)."""
        for mountpoint, proc in self._mounts:
            if proc.poll() is None:
                with contextlib.suppress(subprocess.CalledProcessError):
                    _fuse_unmount(mountpoint)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stderr:
                proc.stderr.close()
        self._mounts.clear()
        deadline = time.monotonic() + 5
        while self._stats and time.monotonic() < deadline and \
                not all(s.exists() for s in self._stats):
            time.sleep(0.05)  # nbdkit (nbdfuse's child) writes its stats as it exits
        self.bytes_fetched = sum(_stats_bytes(s) for s in self._stats)
        shutil.rmtree(self.root, ignore_errors=True)


def qemu_info(path: Path, what: str, backing_chain: bool = False) -> list[JSON]:
    """``qemu-img info`` of a mirrored file (``--backing-chain`` when asked); ``ProviderError``
    naming the disk with qemu's reason."""
    cmd = ["qemu-img", "info", "--output=json", "-f", "vmdk", str(path)]
    if backing_chain:
        cmd.insert(2, "--backing-chain")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise exceptions.ProviderError(
            f"{what}: qemu cannot read this VMDK: {proc.stderr.strip()[-400:]}")
    found = json.loads(proc.stdout)
    return found if isinstance(found, list) else [found]


def mount_chain(mirror: Mirror, files: JSON) -> Path:
    """Mirror ``chain_files`` (text written, binaries mounted); the local top path."""
    for path, text in files["text"].items():
        mirror.add_text(path, text)
    for path in files["binary"]:
        mirror.add_binary(path)
    return mirror.local(files["top"])


def discover_and_check(mirror: Mirror, top: str, fetch: Fetch, size: int,
                       what: str) -> JSON:
    """``chain_files`` of the disk at ``top``, checked by opening the whole chain with qemu:
    ``ProviderError`` naming the disk when qemu cannot, or when its virtual size is not the
    disk's ``size`` bytes."""
    def backing_of(path: str) -> str | None:
        mirror.add_binary(path)
        return qemu_info(mirror.local(path), what)[0].get("backing-filename")

    def fetch_text(path: str, limit: int) -> bytes:
        head = fetch(path, limit)
        if is_text_descriptor(head):
            mirror.add_text(path, head.decode("utf-8", "replace").split("\0", 1)[0])
        return head

    files = discover(top, fetch_text, backing_of, what)
    for path in files["binary"]:
        if not mirror.local(path).exists():
            mirror.add_binary(path)
    chain = qemu_info(mirror.local(top), what, backing_chain=True)
    virtual = int(chain[0].get("virtual-size", 0))
    if virtual != size:
        raise exceptions.ProviderError(
            f"{what}: the VMDK holds {virtual} bytes, the VM says {size}")
    return files


class VmdkChainReader:
    """A ``DiskReader`` of a mirrored chain: qemu-nbd over the local top descriptor, its
    allocation from ``qemu-img map`` (only allocated grains are data extents).
    ``bytes_fetched`` (after ``close``): what nbdkit read over HTTP."""

    def __init__(self, mirror: Mirror, files: JSON) -> None:
        self._mirror = mirror
        try:
            self._image = NbdImageReader(str(mount_chain(mirror, files)), "vmdk")
        except BaseException:
            mirror.close()
            raise

    @property
    def size(self) -> int:
        return self._image.size

    @property
    def bytes_fetched(self) -> int:
        return self._mirror.bytes_fetched

    def extents(self, since: str | None = None) -> Iterator[Extent]:
        return self._image.extents()

    def read(self, offset: int, length: int) -> Data:
        return self._image.read(offset, length)

    def close(self) -> None:
        try:
            self._image.close()
        finally:
            self._mirror.close()
