"""Where a disk can be read or written: values that ``transfer/`` owns and opens.

A provider's ``deploy_source_resources`` returns, per disk, a **source location**; its
``deploy_target_resources`` a **target location**. The worker opens a ``DiskReader`` or
``DiskWriter`` for them here (``open_reader``, ``open_writer``); providers never hand out
reader or writer objects. As JSON (in ``task_info``) each is an object with a ``kind``:

``path``   a file or block device on the worker (source and target)::

    {"kind": "path", "path": str, "format": "raw"|"qcow2"|"vmdk"|...,
     "confine": [folder, ...],     # every file opened (backing files too) must be inside
     "what": str,                  # how errors name the disk ("instance 'x': disk file y")
     "journal": str|None}          # target only: undo journal of a replica volume

``nbd``    an NBD export (qemu-nbd, a libvirt pull-mode backup, nbdkit) (source)::

    {"kind": "nbd", "uri": "nbd://host:port/name" | "nbd+unix:///name?socket=/path",
     "dirty_bitmap": str|None,     # meta context qemu:dirty-bitmap:NAME of what changed
     "bitmap_since": str|None}     # the change-tracking token that bitmap counts from
                                   # (a libvirt checkpoint); None: the bitmap's own name

    ``extents(since=T)`` of its reader yields only the bitmap's dirty ranges when ``T`` is
    ``bitmap_since`` (or, without one, ``dirty_bitmap``); any other ``T`` reads every
    allocated extent (a full read, which the block manifests still thin to what changed).

``http``   ranged HTTP(S) reads of a raw image (source)::

    {"kind": "http", "url": str, "size": int, "fingerprint": str|None}

``agent``  a writer agent (``coriolis-server writer``) on a helper machine or another host
(target, and source: a source minion serves the disks it reads)::

    {"kind": "agent", "url": "https://...", "fingerprint": str, "key_ref": str,
     "path": str,                  # the disk as the agent sees it (inside one of its roots)
     "format": str, "mode": "auto"|"always", "journal": str|None, "what": str,
     "confine": [folder, ...]}     # source only: what the agent may open for this disk
                                   # (inside its roots; none: its roots)

    As a target, ``mode`` ``auto`` with the transfer option ``writer_agent`` ``auto``: an
    agent on this very host is bypassed and ``path`` written directly (as a ``path``
    location). As a source it is always read through the agent (its read session,
    ``transfer.agent_reads``: read-only, confined to its roots, the allocated extents or the
    changes since a qcow2 dirty bitmap); ``mode`` and ``journal`` do not apply.

``platform`` a reader only the platform's provider can open (a block API such as EBS
direct, a datastore with a session) (source)::

    {"kind": "platform", "platform": str, ...provider keys}

Locations carry no secret: ``key_ref`` names where the agent key is in the endpoint's
``connection_info`` (a dotted path, e.g. ``"writer.key"``), resolved when the writer opens;
a ``platform`` location is opened by its provider, which has the connection info.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from coriolis import exceptions
from coriolis.transfer.base import DiskReader, DiskWriter
from coriolis.transfer.confine import ConfinedRawReader, ConfinedRawWriter, check_opened
from coriolis.transfer.extents import qcow2_bitmaps
from coriolis.transfer.files import RawFileReader, RawFileWriter
from coriolis.transfer.http_reader import HttpRangeReader
from coriolis.transfer.journal import JournalingWriter
from coriolis.transfer.nbd import NbdImageReader, NbdImageWriter
from coriolis.transfer.nbd_uri import NbdUriReader
from coriolis.transfer.nbd_writer import open_agent_writer
from coriolis.transfer.options import TransferOptions
from coriolis.transfer.remote import (
    AgentAddress,
    AgentError,
    RemoteDiskReader,
    is_this_host,
    key_from_ref,
)

JSON = dict[str, Any]


@dataclass(frozen=True)
class PathLocation:
    """A file or block device on the worker that runs the task."""

    path: str
    format: str = "raw"
    confine: tuple[str, ...] = ()
    what: str = ""
    journal: str | None = None
    kind: str = field(default="path", init=False)


@dataclass(frozen=True)
class NbdLocation:
    uri: str
    dirty_bitmap: str | None = None
    bitmap_since: str | None = None
    kind: str = field(default="nbd", init=False)


@dataclass(frozen=True)
class HttpLocation:
    url: str
    size: int
    fingerprint: str | None = None
    kind: str = field(default="http", init=False)


@dataclass(frozen=True)
class AgentLocation:
    url: str
    fingerprint: str
    key_ref: str
    path: str
    format: str = "raw"
    mode: str = "auto"
    journal: str | None = None
    what: str = ""
    confine: tuple[str, ...] = ()
    kind: str = field(default="agent", init=False)


@dataclass(frozen=True)
class PlatformLocation:
    platform: str
    params: JSON = field(default_factory=dict)
    kind: str = field(default="platform", init=False)


SourceLocation = PathLocation | NbdLocation | HttpLocation | PlatformLocation | AgentLocation
TargetLocation = PathLocation | AgentLocation
Location = SourceLocation

_KINDS: dict[str, type] = {"path": PathLocation, "nbd": NbdLocation, "http": HttpLocation,
                           "agent": AgentLocation, "platform": PlatformLocation}


def to_json(location: Location) -> JSON:
    """The JSON form kept in ``task_info``."""
    value = asdict(location)
    if isinstance(location, PathLocation | AgentLocation):
        value["confine"] = list(location.confine)
    if isinstance(location, PlatformLocation):
        value = {"kind": "platform", "platform": location.platform, **location.params}
    return value


def from_json(value: Any, what: str = "location") -> Location:
    """Parse a location; ``ValueError`` naming ``what`` and the field when malformed."""
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be an object")
    kind = value.get("kind")
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"{what}.kind must be one of {', '.join(_KINDS)} (got {kind!r})")
    fields = {k: v for k, v in value.items() if k != "kind"}
    if cls is PlatformLocation:
        platform = fields.pop("platform", None)
        if not isinstance(platform, str):
            raise ValueError(f"{what}.platform must be a string")
        return PlatformLocation(platform, fields)
    if cls in (PathLocation, AgentLocation) and "confine" in fields:
        fields["confine"] = tuple(fields["confine"] or ())
    try:
        location = cls(**fields)
    except TypeError as exc:
        raise ValueError(f"{what}: {exc}") from None
    return location  # type: ignore[no-any-return]


# --- opening ----------------------------------------------------------------------------------
PlatformOpener = Callable[["PlatformLocation", JSON], DiskReader]


def _parse(location: Location | JSON, what: str) -> Location:
    if isinstance(location, dict):
        try:
            return from_json(location, what)
        except ValueError as exc:
            raise exceptions.InvalidInput(str(exc)) from None
    return location


def open_reader(location: SourceLocation | JSON, *, since: str | None = None,
                connection_info: JSON | None = None,
                platform_opener: PlatformOpener | None = None) -> DiskReader:
    """A ``DiskReader`` of a source location (a dataclass or its JSON).

    - ``path``: raw directly, other formats through qemu-nbd; with ``since`` on a qcow2
      image that has a persistent dirty bitmap of that name, ``extents(since)`` gives what
      changed since it. With ``confine``, every file opened (the raw file's descriptor,
      qemu-nbd's open files with the backing chain) must be inside one of the folders.
    - ``nbd``: libnbd (block status for extents; the dirty bitmap's meta context).
    - ``http``: ranged GETs; every byte is data.
    - ``platform``: ``platform_opener(location, connection_info)``, the source provider's
      ``open_platform_reader``.
    - ``agent``: a ``RemoteDiskReader`` (the agent's read session, ``since`` passed on) with
      the agent key found at ``key_ref`` in ``connection_info`` (the source endpoint's).

    Errors: ``InvalidInput`` for a malformed location or one that leads out of ``confine``
    (naming ``what`` and the file); ``ProviderError`` for a missing disk (naming ``what``),
    an unreachable export or server (naming it), an agent that refuses or a connection info
    without the key at ``key_ref`` (naming ``what``, never the key)."""
    loc = _parse(location, "source location")
    if isinstance(loc, PathLocation):
        return _open_path_reader(loc, since)
    if isinstance(loc, NbdLocation):
        return NbdUriReader(loc.uri, dirty_bitmap=loc.dirty_bitmap, bitmap_since=loc.bitmap_since)
    if isinstance(loc, HttpLocation):
        return HttpRangeReader(loc.url, loc.size, fingerprint=loc.fingerprint)
    if isinstance(loc, PlatformLocation):
        if platform_opener is None:
            raise exceptions.ProviderError(
                f"no reader for a '{loc.platform}' platform location here")
        return platform_opener(loc, connection_info or {})
    address = _agent_address(loc, connection_info or {}, "source")
    try:
        return RemoteDiskReader(address, loc.path, loc.format, since=since,
                                confine=loc.confine)
    except AgentError as exc:
        raise exceptions.ProviderError(f"{_name(loc)}: {exc}") from None


def _name(loc: PathLocation | AgentLocation) -> str:
    return loc.what or f"disk {loc.path}"


def _agent_address(loc: AgentLocation, connection_info: JSON, side: str) -> AgentAddress:
    """The agent of ``loc`` with its key from ``connection_info`` (the ``side`` endpoint's);
    errors name the disk and the agent, never the key."""
    what = _name(loc)
    try:
        key = key_from_ref(connection_info, loc.key_ref, side)
    except exceptions.ProviderError as exc:
        raise exceptions.ProviderError(f"{what}: {exc} (agent at {loc.url})") from None
    try:
        return AgentAddress.from_json({"url": loc.url, "fingerprint": loc.fingerprint,
                                       "key": key})
    except ValueError as exc:  # a malformed fingerprint
        raise exceptions.InvalidInput(f"{what}: agent fingerprint: {exc}") from None


def _open_path_reader(loc: PathLocation, since: str | None) -> DiskReader:
    what = _name(loc)
    if not os.path.exists(loc.path):
        raise exceptions.ProviderError(f"{what} is missing")
    if loc.format == "raw":
        if loc.confine:
            return ConfinedRawReader(loc.path, loc.confine, what)
        try:
            return RawFileReader(loc.path)
        except OSError as exc:
            raise exceptions.ProviderError(f"{what} cannot be read: {exc.strerror}") from None
    bitmap = (since if since and loc.format == "qcow2" and since in qcow2_bitmaps(loc.path)
              else None)
    reader = NbdImageReader(loc.path, loc.format, bitmap=bitmap)
    if loc.confine:
        try:
            check_opened(reader.open_files(), loc.confine, what)
        except BaseException:
            reader.close()
            raise
    return reader


def writes_through_agent(location: TargetLocation | JSON, options: TransferOptions) -> str | None:
    """The URL of the writer agent a writer of ``location`` sends to, or None when it
    writes on this host: an ``agent`` location is written directly when its ``mode`` and
    ``options.writer_agent`` are both ``auto`` and the agent is on this host."""
    loc = _parse(location, "target location")
    if not isinstance(loc, AgentLocation):
        return None
    if loc.mode == "auto" and options.writer_agent == "auto" and is_this_host(loc.url):
        return None
    return loc.url


def open_writer(location: TargetLocation | JSON, *, options: TransferOptions, transfer_id: str,
                connection_info: JSON, size: int | None = None) -> DiskWriter:
    """A ``DiskWriter`` of a target location (a dataclass or its JSON), at least ``size``
    bytes (the volume's) when given.

    - ``path``: raw directly (a file or block device), other formats through qemu-nbd;
      ``journal``: every overwritten range is first saved there (``JournalingWriter``);
      ``confine`` as for readers.
    - ``agent``: through the agent's TLS NBD export, or a ``RemoteDiskWriter`` over HTTPS
      (``nbd_writer.open_agent_writer`` chooses; transfer id ``transfer_id``; a re-run with
      the same id resumes) with the agent key found at ``key_ref`` (a dotted path) in
      ``connection_info``, compression and bandwidth limit from ``options``; written as a
      ``path`` location when ``writes_through_agent`` says so.

    Errors, naming the disk (``what``) and never the agent key: ``ProviderError`` when the
    target is missing, not writable, smaller than ``size``, or the agent refuses; and when
    the connection info has no key at ``key_ref``; ``InvalidInput`` for a malformed or
    source-only location."""
    loc = _parse(location, "target location")
    if isinstance(loc, AgentLocation):
        what = _name(loc)
        if writes_through_agent(loc, options) is None:
            writer = _open_path_writer(PathLocation(loc.path, loc.format, what=what,
                                                    journal=loc.journal))
        else:
            address = _agent_address(loc, connection_info, "destination")
            try:
                writer = open_agent_writer(
                    address, transfer_id, loc.path, loc.format, journal=loc.journal,
                    compression=options.compression, bandwidth_limit=options.bandwidth_limit,
                    transport=options.agent_transport)
            except AgentError as exc:
                raise exceptions.ProviderError(f"{what}: {exc}") from None
    elif isinstance(loc, PathLocation):
        what = _name(loc)
        writer = _open_path_writer(loc)
    else:
        raise exceptions.InvalidInput(f"a {loc.kind} location cannot be written")
    if size is not None and writer.size < size:
        writer.close()
        raise exceptions.ProviderError(
            f"{what} is smaller ({writer.size} bytes) than the volume ({size} bytes)")
    return writer


def _open_path_writer(loc: PathLocation) -> DiskWriter:
    what = _name(loc)
    if not os.path.exists(loc.path):
        raise exceptions.ProviderError(f"{what} is missing")
    writer: DiskWriter
    if loc.format == "raw":
        if loc.confine:
            writer = ConfinedRawWriter(loc.path, loc.confine, what)
        else:
            try:
                writer = RawFileWriter(loc.path)
            except OSError as exc:
                raise exceptions.ProviderError(
                    f"{what} is not writable: {exc.strerror}") from None
    else:
        if not os.access(loc.path, os.W_OK):
            raise exceptions.ProviderError(f"{what} is not writable")
        nbd_writer = NbdImageWriter(loc.path, loc.format)
        if loc.confine:
            try:
                check_opened(nbd_writer.open_files(), loc.confine, what)
            except BaseException:
                nbd_writer.close()
                raise
        writer = nbd_writer
    return JournalingWriter(writer, loc.journal) if loc.journal else writer
