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
     "dirty_bitmap": str|None}     # meta context qemu:dirty-bitmap:NAME of what changed

``http``   ranged HTTP(S) reads of a raw image (source)::

    {"kind": "http", "url": str, "size": int, "fingerprint": str|None}

``agent``  a writer agent (``coriolis-server writer``) on a helper machine or another host
(target)::

    {"kind": "agent", "url": "https://...", "fingerprint": str, "key_ref": str,
     "path": str, "format": str, "mode": "auto"|"always", "journal": str|None}

``platform`` a reader only the platform's provider can open (a block API such as EBS
direct, a datastore with a session) (source)::

    {"kind": "platform", "platform": str, ...provider keys}

Locations carry no secret: ``key_ref`` names where the agent key is in the endpoint's
``connection_info`` (a dotted path, e.g. ``"writer.key"``), resolved when the writer opens;
a ``platform`` location is opened by its provider, which has the connection info.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

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
    kind: str = field(default="agent", init=False)


@dataclass(frozen=True)
class PlatformLocation:
    platform: str
    params: JSON = field(default_factory=dict)
    kind: str = field(default="platform", init=False)


SourceLocation = PathLocation | NbdLocation | HttpLocation | PlatformLocation
TargetLocation = PathLocation | AgentLocation
Location = SourceLocation | AgentLocation

_KINDS: dict[str, type] = {"path": PathLocation, "nbd": NbdLocation, "http": HttpLocation,
                           "agent": AgentLocation, "platform": PlatformLocation}


def to_json(location: Location) -> JSON:
    """The JSON form kept in ``task_info``."""
    value = asdict(location)
    if isinstance(location, PathLocation):
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
    if cls is PathLocation and "confine" in fields:
        fields["confine"] = tuple(fields["confine"] or ())
    try:
        location = cls(**fields)
    except TypeError as exc:
        raise ValueError(f"{what}: {exc}") from None
    return location  # type: ignore[no-any-return]
