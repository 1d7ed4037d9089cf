"""The writer agent: the destination side of a copy between hosts (``coriolis-server writer``).

A worker opens a *transfer* (a destination disk image under one of the agent's roots) with the
agent key and gets a per-transfer bearer token; every other request of that transfer carries
the token. Each chunk comes with the xxh3 of its content: a chunk whose content does not match
is refused (422) and never written. A chunk is acknowledged only once it is durable: writes
are committed in groups (one fsync of the disk, then one of the transfer's acknowledgement
log), so parallel senders share the cost of a flush. The log survives the agent: after a
crash the worker re-opens the transfer and sends only what was never acknowledged.

The agent's host is also the *helper machine* of its cloud for OS morphing: with the agent key
a worker starts a job that morphs a guest on disks under the agent's roots (``start_morph``,
jobs in ``osmorphing.jobs``) and polls its events.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash
import zstandard
from pydantic import BaseModel, Field, ValidationError

from coriolis import exceptions
from coriolis.osmorphing import appliance
from coriolis.osmorphing.guest import MorphingFailed
from coriolis.osmorphing.isolated import MorphRequest
from coriolis.osmorphing.jobs import DiskBusy, MorphJob, MorphJobs
from coriolis.transfer.base import DiskWriter
from coriolis.transfer.images import image_files, open_image_writer
from coriolis.transfer.journal import JournalingWriter
from coriolis.transfer.wire import RangeSet

LOG = logging.getLogger(__name__)
MAX_CHUNK = 64 * 1024 * 1024
IDLE_SECONDS = 300.0
DEVICE_WAIT_SECONDS = 20.0
_ACK = struct.Struct(">QQ")  # start, end of a durable range
_ID_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_")


class RequestError(Exception):
    """A request the agent refuses: HTTP status and a message for the sender."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class _Batch:
    """Ranges written since the last commit; everyone waiting on them wakes when it is done."""

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []
        self.done = threading.Event()
        self.error: str | None = None


class Transfer:
    """One destination disk being written, its token and its acknowledgement log."""

    def __init__(self, folder: Path, state: dict[str, Any]) -> None:
        self.folder, self.state = folder, state
        self.id = folder.name
        writer: DiskWriter = self._open_writer(state)
        if state.get("journal"):
            writer = JournalingWriter(writer, state["journal"])
        self.writer = writer
        self.durable = RangeSet()
        log_path = folder / "acks"
        if log_path.exists():
            blob = log_path.read_bytes()
            usable = len(blob) - len(blob) % _ACK.size  # a torn last record never counted
            for pos in range(0, usable, _ACK.size):
                self.durable.add(*_ACK.unpack_from(blob, pos))
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        self._cond = threading.Condition()
        self._batch = _Batch()
        self._closed = False
        self.last_used = time.monotonic()
        self._committer = threading.Thread(target=self._commit_loop, daemon=True,
                                           name=f"commit-{self.id[:8]}")
        self._committer.start()

    def _open_writer(self, state: dict[str, Any]) -> DiskWriter:
        return open_image_writer(state["path"], state["format"])

    def open_reply(self) -> dict[str, Any]:
        """What the open reply adds for this kind of transfer (``nbd_export``'s export)."""
        return {}

    @property
    def size(self) -> int:
        return self.writer.size

    def token_matches(self, token: str) -> bool:
        return hmac.compare_digest(_digest(token), self.state["token_sha256"])

    def wait_durable(self, start: int, end: int) -> None:
        """Block until ``[start, end)`` (already written) is flushed and logged."""
        self.wait_durable_ranges([(start, end)])

    def wait_durable_ranges(self, ranges: list[tuple[int, int]]) -> None:
        """Block until every range (already written) is flushed and logged."""
        with self._cond:
            batch = self._batch
            batch.ranges.extend(ranges)
            self._cond.notify_all()
        batch.done.wait()
        if batch.error:
            raise exceptions.ProviderError(batch.error)

    def _commit_loop(self) -> None:
        while True:
            with self._cond:
                while not self._batch.ranges and not self._closed:
                    self._cond.wait()
                if not self._batch.ranges:
                    return
                batch, self._batch = self._batch, _Batch()
            try:
                self.writer.flush()
                self._log.write(b"".join(_ACK.pack(s, e) for s, e in batch.ranges))
                self._log.flush()
                os.fsync(self._log.fileno())
                for start, end in batch.ranges:
                    self.durable.add(start, end)
            except Exception as exc:  # noqa: BLE001 - reported to every waiter
                LOG.exception("transfer %s: commit failed", self.id)
                batch.error = f"cannot make the data durable: {exc}"
            batch.done.set()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._committer.join()
        self._log.close()
        self.writer.close()


class OpenRequest(BaseModel):
    path: str = Field(min_length=1, description="Destination image, under one of the roots")
    format: str = Field(default="raw", pattern=r"^[a-z0-9]+$")
    journal: str | None = Field(default=None,
                                description="Undo journal to keep beside the disk")
    export: str | None = Field(default=None, pattern=r"^nbd$",
                               description="nbd: serve the disk as a TLS NBD export (see "
                                           "transfer.nbd_export); older agents ignore it")


class DurableRequest(BaseModel):
    ranges: list[tuple[int, int]] = Field(max_length=100_000,
                                          description="Byte ranges flushed through NBD")


class MorphDisk(BaseModel):
    path: str = Field(min_length=1, description="The disk image, under one of the roots")
    format: str = Field(pattern=r"^[a-z0-9]+$")
    name: str = Field(min_length=1, max_length=128)


class MorphBody(BaseModel):
    """``osmorphing.isolated.MorphRequest`` as JSON."""

    disks: list[MorphDisk] = Field(min_length=1)
    profile: dict[str, Any]
    instance: str = Field(min_length=1)
    source_macs: list[str | None] = Field(default_factory=list)
    user_scripts: dict[str, Any] = Field(default_factory=dict)


def parse_body(model: type[BaseModel], body: bytes, what: str) -> Any:
    """``body`` (JSON) as ``model``; 400 naming the fields that are wrong (not their values,
    which may be secrets)."""
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) or "body" for e in exc.errors())
        raise RequestError(400, f"invalid {what}: check {fields}") from exc


@dataclass
class AgentConfig:
    data_dir: Path
    roots: list[Path]
    agent_key: str
    listen_host: str = "127.0.0.1"  # where NBD exports listen: the agent's own address


class WriterAgent:
    """The transfers of one agent, kept in ``data_dir/transfers/<id>/``."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.folder = config.data_dir / "transfers"
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._open: dict[str, Transfer] = {}
        self._lock = threading.Lock()
        self._zstd = threading.local()
        self._stop = threading.Event()
        self.morphs = MorphJobs()
        threading.Thread(target=self._close_idle, daemon=True, name="idle-transfers").start()

    def _close_idle(self) -> None:
        """Release the disks of transfers nobody used for ``IDLE_SECONDS`` (a sender that
        died): their state stays on disk, so the transfer can still be resumed."""
        while not self._stop.wait(min(IDLE_SECONDS / 4, 30)):
            now = time.monotonic()
            with self._lock:
                idle = [t for t in self._open.values() if now - t.last_used > IDLE_SECONDS]
                for transfer in idle:
                    del self._open[transfer.id]
            for transfer in idle:
                LOG.info("transfer %s idle; its disk is closed until it resumes", transfer.id)
                transfer.close()

    # --- checks ---------------------------------------------------------------------------
    def _inside_roots(self, field: str, path: str) -> str:
        real = os.path.realpath(path)
        for root in self.config.roots:
            base = os.path.realpath(root)
            if real == base or real.startswith(base + os.sep):
                return real
        raise RequestError(400, f"{field} {path!r} is outside the directories this agent "
                                 f"serves")

    def check_agent_key(self, key: str | None, to: str = "open a transfer") -> None:
        if not key or not hmac.compare_digest(key, self.config.agent_key):
            raise RequestError(401, f"a valid agent key is required to {to}")

    @staticmethod
    def _check_id(transfer_id: str, what: str = "transfer") -> None:
        if not transfer_id or len(transfer_id) > 128 or not set(transfer_id) <= _ID_CHARS:
            raise RequestError(400, f"{what} id: use 1-128 of a-z, 0-9, '-' and '_'")

    # --- transfers ------------------------------------------------------------------------
    def open(self, transfer_id: str, request: OpenRequest) -> tuple[Transfer, str]:
        """Open (or re-open, after a crash of either side) a transfer; a re-open issues a new
        token, so a sender that was presumed dead can write no more."""
        self._check_id(transfer_id)
        self._inside_roots("path", request.path)
        if request.path.startswith("/dev/"):
            # A disk just hot-plugged into this machine (a minion) gets its /dev name from
            # udev a moment later.
            deadline = time.monotonic() + DEVICE_WAIT_SECONDS
            while not os.path.exists(request.path) and time.monotonic() < deadline:
                time.sleep(0.1)
        path = self._inside_roots("path", request.path)
        journal = self._inside_roots("journal", request.journal) if request.journal else None
        if not os.path.exists(path):
            raise RequestError(400, f"path {request.path!r} does not exist")
        nbd = self._serves_nbd(request, path, journal)
        token = secrets.token_urlsafe(32)
        with self._lock:
            folder = self.folder / transfer_id
            state_file = folder / "state.json"
            if state_file.exists():
                state = json.loads(state_file.read_text())
                if (state["path"], state["format"]) != (path, request.format):
                    raise RequestError(409, f"transfer {transfer_id} writes another disk")
            else:
                folder.mkdir(mode=0o700)
                state = {"path": path, "format": request.format, "journal": journal}
            state["token_sha256"] = _digest(token)
            tmp = folder / "state.json.tmp"
            tmp.write_text(json.dumps(state))
            os.replace(tmp, state_file)
            transfer = self._open.get(transfer_id)
            if transfer is not None and (nbd or type(transfer) is not Transfer):
                # An NBD export gets a new key on every open (a sender presumed dead loses
                # its connections), and a transfer may change from one path to the other.
                del self._open[transfer_id]
                transfer.close()
                transfer = None
            if transfer is None:
                try:
                    transfer = self._new_transfer(folder, state, nbd)
                except exceptions.CoriolisError as exc:
                    raise RequestError(400, str(exc)) from exc
                self._open[transfer_id] = transfer
            transfer.state = state
            transfer.last_used = time.monotonic()
        return transfer, token

    def _serves_nbd(self, request: OpenRequest, path: str, journal: str | None) -> bool:
        """Whether this transfer gets a TLS NBD export: asked for, no undo journal to keep
        (only the HTTPS path journals), qemu-nbd here, every file of the image under the
        roots."""
        from coriolis.transfer import nbd_export

        if request.export != "nbd" or journal or not nbd_export.available():
            return False
        if request.format != "raw":
            try:
                files = image_files(Path(path), request.format)
            except exceptions.CoriolisError as exc:
                raise RequestError(400, f"path: {exc}") from None
            for file in files[1:]:
                self._inside_roots("path (a file it is made of)", file)
        return True

    def _new_transfer(self, folder: Path, state: dict[str, Any], nbd: bool) -> Transfer:
        if not nbd:
            return Transfer(folder, state)
        from coriolis.transfer.nbd_export import NbdTransfer

        return NbdTransfer(folder, state, self.config.listen_host)

    def release(self, transfer: Transfer) -> None:
        """Close a transfer (its disk, its NBD export) but keep its state for resuming."""
        with self._lock:
            if self._open.get(transfer.id) is transfer:
                del self._open[transfer.id]
        transfer.close()

    def get(self, transfer_id: str, authorization: str | None) -> Transfer:
        """The transfer a bearer token is for (reloaded from disk after an agent restart)."""
        self._check_id(transfer_id)
        token = (authorization or "").removeprefix("Bearer ").strip()
        with self._lock:
            transfer = self._open.get(transfer_id)
            if transfer is None:
                state_file = self.folder / transfer_id / "state.json"
                if not state_file.exists():
                    raise RequestError(404, f"no transfer {transfer_id}")
                state = json.loads(state_file.read_text())
                if not token or not hmac.compare_digest(_digest(token), state["token_sha256"]):
                    raise RequestError(401, "invalid transfer token")
                transfer = Transfer(state_file.parent, state)
                self._open[transfer_id] = transfer
            transfer.last_used = time.monotonic()
        if not token or not transfer.token_matches(token):
            raise RequestError(401, "invalid transfer token")
        return transfer

    def delete(self, transfer: Transfer) -> None:
        with self._lock:
            self._open.pop(transfer.id, None)
        transfer.close()
        shutil.rmtree(transfer.folder, ignore_errors=True)

    # --- OS morphing (this host as its cloud's helper machine) ----------------------------
    def start_morph(self, job_id: str, body: bytes) -> MorphJob:
        """Start OS morphing job ``job_id`` (``MorphRequest`` JSON in ``body``) on disks under
        the roots: every file of a disk (backing chain, extents) must be there. 400 for a
        disk outside the roots or missing, 409 when another job morphs one of the disks, 501
        when this host lacks libguestfs."""
        self._check_id(job_id, "OS morphing job")
        value = parse_body(MorphBody, body, "OS morphing request")
        disks = []
        for i, disk in enumerate(value.disks):
            field = f"disks.{i}.path"
            path = self._inside_roots(field, disk.path)
            if not os.path.isfile(path):
                raise RequestError(400, f"{field} {disk.path!r} does not exist on the writer "
                                        f"agent's host")
            try:
                files = image_files(Path(path), disk.format)
            except exceptions.CoriolisError as exc:
                raise RequestError(400, f"{field}: {exc}") from None
            for file in files[1:]:
                self._inside_roots(f"{field} (a file it is made of)", file)
            disks.append(appliance.GuestDisk(path, disk.format, disk.name))
        try:
            appliance.load_guestfs()
        except MorphingFailed:
            raise RequestError(501, "libguestfs is not installed on the writer agent's host "
                                    "(Debian: apt-get install libguestfs-tools "
                                    "python3-guestfs); OS morphing cannot run there") from None
        request = MorphRequest(disks=disks, profile=value.profile, instance=value.instance,
                               source_macs=value.source_macs, user_scripts=value.user_scripts)
        try:
            return self.morphs.start(job_id, request)
        except DiskBusy as exc:
            raise RequestError(409, str(exc)) from None

    def morph_job(self, job_id: str) -> MorphJob:
        self._check_id(job_id, "OS morphing job")
        job = self.morphs.get(job_id)
        if job is None:
            raise RequestError(404, f"no OS morphing job {job_id}")
        return job

    def stop_morph(self, job_id: str) -> None:
        """Stop a job's appliance (waiting until its processes are gone) and forget it."""
        self._check_id(job_id, "OS morphing job")
        self.morphs.stop(job_id)

    def close(self) -> None:
        self._stop.set()
        self.morphs.stop_all()
        with self._lock:
            for transfer in self._open.values():
                transfer.close()
            self._open.clear()

    def decompress(self, data: bytes, limit: int) -> bytes:
        dctx = getattr(self._zstd, "dctx", None)
        if dctx is None:
            dctx = self._zstd.dctx = zstandard.ZstdDecompressor()
        try:
            return dctx.decompress(data, max_output_size=limit)
        except zstandard.ZstdError as exc:
            raise RequestError(422, f"chunk does not decompress: {exc}") from exc

    def write_chunk(self, transfer: Transfer, offset: int, body: bytes, encoding: str,
                    expected: str | None) -> None:
        """Check a chunk against its xxh3, write it, return once it is durable."""
        if not expected:
            raise RequestError(400, "header X-Coriolis-Xxh3 (xxh3 of the chunk) is required")
        if encoding == "zstd":
            data = self.decompress(body, MAX_CHUNK)
        elif encoding == "identity":
            data = body
        else:
            raise RequestError(415, f"Content-Encoding {encoding!r}: use zstd or identity")
        if offset < 0 or offset + len(data) > transfer.size:
            raise RequestError(400, f"offset {offset}: chunk of {len(data)} bytes does not "
                                    f"fit in the disk ({transfer.size} bytes)")
        if xxhash.xxh3_64_hexdigest(data) != expected.lower():
            LOG.warning("transfer %s: chunk at %d failed its checksum", transfer.id, offset)
            raise RequestError(422, f"chunk at offset {offset} does not match its checksum; "
                                    f"send it again")
        transfer.writer.write(offset, data)
        transfer.wait_durable(offset, offset + len(data))

    @staticmethod
    def check_range(transfer: Transfer, offset: int, length: int, limit: int) -> None:
        if offset < 0 or length <= 0 or length > limit or offset + length > transfer.size:
            raise RequestError(400, f"range {offset}+{length} is outside the disk or too long")


