"""The transfer options every import provider's destination environment gets.

They say how disks move, not where they go, so they are ``transfer/``'s, not a provider's:
the API merges ``TRANSFER_OPTIONS_SCHEMA``'s properties into every import provider's
``destination_environment_schema`` (``with_transfer_options``), and the worker reads them
with ``TransferOptions.from_env`` when it opens writers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from coriolis.transfer.wire import COMPRESSIONS

JSON = dict[str, Any]
MiB = 1024 * 1024

TRANSFER_OPTIONS_SCHEMA: JSON = {
    "type": "object",
    "properties": {
        "transfer_compression": {
            "type": "string", "enum": list(COMPRESSIONS), "default": "auto",
            "description": "zstd on the wire to a writer agent: auto compresses when that is "
                           "faster than the link"},
        "transfer_bandwidth_limit_mib": {
            "type": "number", "exclusiveMinimum": 0,
            "description": "Bandwidth limit of each disk transfer to a writer agent, MiB/s"},
        "writer_agent": {
            "type": "string", "enum": ["auto", "always"], "default": "auto",
            "description": "auto: write through a target's writer agent only when it is on "
                           "another host; always: through the agent even on this host"},
        "writer_agent_transport": {
            "type": "string", "enum": ["https", "nbd"], "default": "https",
            "description": "https: chunks as HTTPS requests to the writer agent; nbd: "
                           "through a TLS NBD export the agent serves (libnbd), falling back "
                           "to https where NBD cannot be used (undo journals, zstd, a "
                           "bandwidth limit, an older agent)"},
    },
}


def with_transfer_options(schema: JSON) -> JSON:
    """A copy of a destination environment schema with the transfer options added (the
    provider's own property of the same name wins)."""
    merged = copy.deepcopy(schema)
    props = merged.setdefault("properties", {})
    for name, prop in TRANSFER_OPTIONS_SCHEMA["properties"].items():
        props.setdefault(name, copy.deepcopy(prop))
    return merged


@dataclass(frozen=True)
class TransferOptions:
    compression: str = "auto"
    bandwidth_limit: float | None = None  # bytes per second
    writer_agent: str = "auto"
    agent_transport: str = "https"

    @classmethod
    def from_env(cls, env: JSON | None) -> TransferOptions:
        """From a destination environment (already validated against the schema)."""
        env = env or {}
        limit = env.get("transfer_bandwidth_limit_mib")
        return cls(compression=env.get("transfer_compression") or "auto",
                   bandwidth_limit=float(limit) * MiB if limit else None,
                   writer_agent=env.get("writer_agent") or "auto",
                   agent_transport=env.get("writer_agent_transport") or "https")
