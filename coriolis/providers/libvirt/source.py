"""The libvirt provider's source side: instances, cold and live exports, change tracking.

Instances are domains (running and shut off), found by name or UUID; ``export_info`` per
``coriolis.providers.base``, each disk with ``id`` (the target dev, ``vda``), ``path`` (its
file on the host), ``format``, ``bus``, ``size_bytes`` and, for pool volumes, ``pool`` and
``volume``. Domains this provider is still deploying (pending metadata, see
``destination``) are not listed.

Exports (``deploy_source_resources``):

- **cold** (domain shut off): each disk is exported read-only by a ``qemu-nbd`` on a unix
  socket under ``scratch_dir``; its image lock keeps the domain from being started (so from
  writing) until ``delete_source_resources`` stops it: a point-in-time view; the source is
  never written.
- **live** (domain running): a checkpoint and a pull-mode backup (``backupBegin``), one NBD
  export per disk on a unix socket under ``scratch_dir`` (owned by ``libvirt-qemu``); the
  location's ``dirty_bitmap`` is ``backup-<dev>``. For a replica (``tracking_id``), the
  checkpoint is ``coriolis-<tracking_id[:8]>-<hex>`` and its name the change-tracking token;
  the backup is incremental from the token in force (``keep_tokens``), with the location's
  ``bitmap_since`` set to it, so the worker reads only the dirty extents. A lost or invalid
  checkpoint falls back to a full backup (``base:allocation``) and says so (an ``events``
  list in the resources, which the worker reports). Checkpoints of the tracking id other than
  ``keep_tokens`` and the new one go.

``delete_source_resources`` ends the backup job (``abortJob``), stops qemu-nbd, removes the
sockets and scratch files, and drops checkpoints of the tracking id but ``keep_tokens``;
idempotent, and it finds what a call that died before reporting left (by ``transfer_id``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from coriolis.providers.base import InstancesProvider, ReplicaExportProvider, SourceOptionsProvider

JSON = dict[str, Any]


class LibvirtSource(InstancesProvider, SourceOptionsProvider, ReplicaExportProvider):
    def list_instances(self, connection_info: JSON, env: JSON) -> list[JSON]:
        raise NotImplementedError

    def get_instance(self, connection_info: JSON, env: JSON, instance: str) -> JSON:
        raise NotImplementedError

    def list_source_options(self, connection_info: JSON, env: JSON,
                            option_names: list[str] | None) -> list[JSON]:
        return []

    def source_environment_schema(self) -> JSON:
        return {"$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
                "properties": {}, "additionalProperties": False}

    def validate_source_inputs(self, connection_info: JSON, env: JSON, instance: str) -> None:
        self.get_instance(connection_info, env, instance)

    def deploy_source_resources(self, connection_info: JSON, env: JSON, export_info: JSON,
                                tracking_id: str | None = None,
                                transfer_id: str | None = None,
                                keep_tokens: Iterable[str] = ()) -> JSON:
        raise NotImplementedError

    def delete_source_resources(self, connection_info: JSON, env: JSON,
                                source_resources: JSON) -> None:
        raise NotImplementedError

    def shutdown_instance(self, connection_info: JSON, env: JSON, export_info: JSON) -> None:
        raise NotImplementedError
