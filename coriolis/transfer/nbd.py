"""A small NBD client (fixed newstyle handshake, simple replies) and a qemu-nbd runner.

Images in formats other than raw (qcow2, vmdk, vhdx) are read and written through
``qemu-nbd`` serving them on a unix socket, so the copy pipeline sees plain block devices.
Several connections serve parallel requests: qemu-nbd is started with ``--shared``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from coriolis import exceptions
from coriolis.transfer.base import Data, Extent
from coriolis.transfer.nbd_uri import NbdUriReader

_NBDMAGIC = b"NBDMAGIC"
_IHAVEOPT = 0x49484156454F5054
_OPT_EXPORT_NAME = 1
_FLAG_FIXED_NEWSTYLE = 1
_FLAG_NO_ZEROES = 2
_REQUEST_MAGIC = 0x25609513
_REPLY_MAGIC = 0x67446698
_CMD_READ, _CMD_WRITE, _CMD_DISC, _CMD_FLUSH, _CMD_WRITE_ZEROES = 0, 1, 2, 3, 6
_REQUEST = struct.Struct(">IHHQQI")
_REPLY = struct.Struct(">IIQ")
MAX_REQUEST = 32 * 1024 * 1024


class NbdError(exceptions.ProviderError):
    pass


class NbdConnection:
    """One NBD connection; requests are serialised by a lock."""

    def __init__(self, socket_path: str) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(socket_path)
        self._lock = threading.Lock()
        self._handle = 0
        self.size = self._handshake()

    def _recv_into(self, view: memoryview) -> None:
        got, n = 0, len(view)
        while got < n:
            r = self._sock.recv_into(view[got:], n - got)
            if r == 0:
                raise NbdError("NBD server closed the connection")
            got += r

    def _recv_exactly(self, n: int) -> bytes:
        buf = bytearray(n)
        self._recv_into(memoryview(buf))
        return bytes(buf)

    def _handshake(self) -> int:
        magic, opt_magic, server_flags = struct.unpack(">8sQH", self._recv_exactly(18))
        if magic != _NBDMAGIC or opt_magic != _IHAVEOPT:
            raise NbdError("not a newstyle NBD server")
        no_zeroes = bool(server_flags & _FLAG_NO_ZEROES)
        client_flags = _FLAG_FIXED_NEWSTYLE | (_FLAG_NO_ZEROES if no_zeroes else 0)
        self._sock.sendall(struct.pack(">I", client_flags))
        self._sock.sendall(struct.pack(">QII", _IHAVEOPT, _OPT_EXPORT_NAME, 0))
        size, _flags = struct.unpack(">QH", self._recv_exactly(10))
        if not no_zeroes:
            self._recv_exactly(124)
        return size

    def _request(self, cmd: int, offset: int, length: int, payload: memoryview | None = None,
                 into: memoryview | None = None) -> None:
        """One request; a read's data lands in ``into`` (no intermediate copies)."""
        with self._lock:
            self._handle += 1
            header = _REQUEST.pack(_REQUEST_MAGIC, 0, cmd, self._handle, offset, length)
            if payload is not None and len(payload) < 65536:
                self._sock.sendall(header + payload)
            else:
                self._sock.sendall(header)
                if payload is not None:
                    self._sock.sendall(payload)
            magic, error, handle = _REPLY.unpack(self._recv_exactly(_REPLY.size))
            if magic != _REPLY_MAGIC or handle != self._handle:
                raise NbdError("unexpected NBD reply")
            if error:
                raise NbdError(f"NBD request failed at offset {offset}: {os.strerror(error)}")
            if into is not None:
                self._recv_into(into)

    def pread(self, offset: int, length: int) -> bytearray:
        buf = bytearray(length)
        view = memoryview(buf)
        done = 0
        while done < length:
            n = min(MAX_REQUEST, length - done)
            self._request(_CMD_READ, offset + done, n, into=view[done:done + n])
            done += n
        return buf

    def pwrite(self, offset: int, data: Data) -> None:
        view = memoryview(data)
        while view:
            n = min(MAX_REQUEST, len(view))
            self._request(_CMD_WRITE, offset, n, payload=view[:n])
            view = view[n:]
            offset += n

    def zero(self, offset: int, length: int) -> None:
        end = offset + length
        while offset < end:
            n = min(1 << 30, end - offset)
            self._request(_CMD_WRITE_ZEROES, offset, n)
            offset += n

    def flush(self) -> None:
        self._request(_CMD_FLUSH, 0, 0)

    def close(self) -> None:
        try:
            with self._lock:
                self._sock.sendall(_REQUEST.pack(_REQUEST_MAGIC, 0, _CMD_DISC, 0, 0, 0))
        except OSError:
            pass
        self._sock.close()


class QemuNbdExport:
    """``qemu-nbd`` serving one image on a private unix socket, for as long as it is open."""

    def __init__(self, path: str, fmt: str, *, readonly: bool, connections: int = 8,
                 bitmap: str | None = None) -> None:
        self.path, self.fmt = path, fmt
        self._dir = tempfile.mkdtemp(prefix="coriolis-nbd-")
        self.socket_path = os.path.join(self._dir, "nbd.sock")
        cmd = ["qemu-nbd", "--persistent", f"--shared={connections}", "--socket",
               self.socket_path, "-f", fmt, "--cache=writeback"]
        if bitmap:
            cmd += ["-B", bitmap]
        if readonly:
            cmd.append("--read-only")
        else:
            cmd += ["--discard=unmap", "--detect-zeroes=unmap"]
        self._proc = subprocess.Popen([*cmd, path], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE)
        try:
            self._wait_until_listening()
        except BaseException:
            self.close()
            raise

    def open_files(self) -> list[str]:
        """The files qemu-nbd holds open (the image, its backing files, extents), as the
        kernel resolved them when it opened them: what it really reads, whatever their names
        lead to now."""
        folder = f"/proc/{self._proc.pid}/fd"
        found = []
        for fd in os.listdir(folder):
            try:
                target = os.readlink(f"{folder}/{fd}")
            except OSError:  # closed meanwhile
                continue
            if target.startswith("/") and not target.startswith(("/dev/", "/proc/")):
                found.append(target.removesuffix(" (deleted)"))
        return found

    def _wait_until_listening(self) -> None:
        """Until qemu-nbd accepts a connection. Its socket file appears at bind(), before it
        listens; and when qemu-nbd then fails (another process holds the image's write lock,
        say) the file stays behind: a connection refused there must say why."""
        deadline = time.monotonic() + 30
        while True:
            self._raise_if_exited()
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    probe.connect(self.socket_path)
                return
            except (FileNotFoundError, ConnectionRefusedError):
                pass
            if time.monotonic() > deadline:
                raise NbdError(f"qemu-nbd did not start for {Path(self.path).name}")
            time.sleep(0.01)

    def _raise_if_exited(self) -> None:
        if self._proc.poll() is not None:
            err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
            raise NbdError(f"qemu-nbd could not open {Path(self.path).name}: {err.strip()}")

    def connect(self) -> NbdConnection:
        try:
            return NbdConnection(self.socket_path)
        except OSError as exc:
            time.sleep(0.1)  # long enough for a failing qemu-nbd to have exited
            self._raise_if_exited()
            raise NbdError(f"cannot connect to qemu-nbd for {Path(self.path).name}: "
                           f"{exc}") from exc

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._proc.stderr:
            self._proc.stderr.close()
        for name in os.listdir(self._dir):
            os.unlink(os.path.join(self._dir, name))
        os.rmdir(self._dir)


class _ConnectionPool:
    """Idle NBD connections, borrowed for one request at a time, so that parallel readers or
    writers never share a socket and never open more than qemu-nbd's ``--shared`` limit."""

    def __init__(self, export: QemuNbdExport, limit: int = 8) -> None:
        self._export = export
        self._idle: queue.LifoQueue[NbdConnection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(limit)
        self._all: list[NbdConnection] = []
        self._lock = threading.Lock()
        try:
            with self.borrow() as conn:
                self.size = conn.size
        except BaseException:
            export.close()  # else its qemu-nbd would hold the image's lock after we are gone
            raise

    @contextlib.contextmanager
    def borrow(self) -> Iterator[NbdConnection]:
        with self._slots:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._export.connect()
                with self._lock:
                    self._all.append(conn)
            try:
                yield conn
            finally:
                self._idle.put(conn)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


class NbdImageReader:
    """A DiskReader over any qemu image format: allocated extents from ``qemu-img map``, or,
    given the persistent dirty ``bitmap`` the image carries, the ranges written since that
    bitmap was created (``extents(since=bitmap)``)."""

    def __init__(self, path: str, fmt: str, bitmap: str | None = None) -> None:
        self._path, self._fmt, self._bitmap = path, fmt, bitmap
        self._export = QemuNbdExport(path, fmt, readonly=True, bitmap=bitmap)
        self._conns = _ConnectionPool(self._export)

    @property
    def size(self) -> int:
        return self._conns.size

    def extents(self, since: str | None = None) -> Iterator[Extent]:
        """Block status from the running qemu-nbd through libnbd (``base:allocation``, or the
        dirty bitmap's context): no ``qemu-img map`` or ``nbdinfo`` process per disk."""
        status = NbdUriReader(f"nbd+unix:///?socket={self._export.socket_path}",
                              dirty_bitmap=self._bitmap)
        try:
            return iter(list(status.extents(since)))
        finally:
            status.close()

    def read(self, offset: int, length: int) -> Data:
        with self._conns.borrow() as conn:
            return conn.pread(offset, length)

    def change_token(self) -> str | None:
        return None

    def open_files(self) -> list[str]:
        return self._export.open_files()

    def close(self) -> None:
        self._conns.close()
        self._export.close()


class NbdImageWriter:
    """A DiskWriter into any qemu image format (the image must exist at its final size)."""

    def __init__(self, path: str, fmt: str) -> None:
        self._export = QemuNbdExport(path, fmt, readonly=False)
        self._conns = _ConnectionPool(self._export)

    def open_files(self) -> list[str]:
        return self._export.open_files()

    @property
    def size(self) -> int:
        return self._conns.size

    def write(self, offset: int, data: Data) -> None:
        with self._conns.borrow() as conn:
            conn.pwrite(offset, data)

    def zero(self, offset: int, length: int) -> None:
        with self._conns.borrow() as conn:
            conn.zero(offset, length)

    def read(self, offset: int, length: int) -> Data:
        with self._conns.borrow() as conn:
            return conn.pread(offset, length)

    def flush(self) -> None:
        with self._conns.borrow() as conn:
            conn.flush()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._conns.close()
            self._export.close()
