"""What a provider plugin implements.

A provider knows one platform and nothing else (like a virt-v2v input/output module). Every
method receives the endpoint's decrypted ``connection_info`` and the relevant environment dict.
Methods raise ``coriolis.exceptions`` errors with messages that never include secrets.

Data shapes (plain JSON-able dicts, stored in the per-instance ``task_info``):

``export_info`` (what ``get_instance`` returns; upstream's vm_export_info)::

    {"id": str, "name": str, "instance_name": str, "num_cpu": int, "memory_mb": int,
     "os_type": str, "firmware_type": "BIOS"|"EFI", "flavor_name": str|None,
     "power_state": str,
     "devices": {"disks": [{"id": str, "size_bytes": int, "format": str, "bus": str,
                            "storage_backend": str|None, ...provider keys}],
                 "nics": [{"id": str, "mac_address": str, "network_name": str}],
                 "controllers": [], "cdroms": [], "floppies": [], "serial_ports": []}}

``volumes_info`` (what ``create_disks`` returns; one entry per source disk)::

    [{"disk_id": str, "size_bytes": int, "storage_backend": str, "format": str,
      ...provider keys locating the volume}]

The destination environment given to import methods already contains ``network_map``
(source network → destination network) and ``storage_mappings`` (``default``,
``backend_mappings``, ``disk_mappings``), as upstream does.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from coriolis import exceptions
from coriolis.transfer.base import DiskReader, DiskWriter

if TYPE_CHECKING:
    from coriolis.config import Settings

JSON = dict[str, Any]


class BaseProvider(abc.ABC):
    """Endpoint capabilities: connection schema, validation and listings."""

    platform: ClassVar[str]
    provider_types: ClassVar[int]

    # --- schemas --------------------------------------------------------------------------------
    @abc.abstractmethod
    def connection_info_schema(self) -> JSON: ...

    @abc.abstractmethod
    def source_environment_schema(self) -> JSON: ...

    @abc.abstractmethod
    def destination_environment_schema(self) -> JSON: ...

    # --- endpoint -------------------------------------------------------------------------------
    def check_location(self, connection_info: JSON, project_id: str,
                       settings: Settings) -> None:
        """Raise ``LocationNotAllowed`` naming the field if ``connection_info`` reaches a place
        on this server's hosts that project ``project_id`` may not use (checked when an
        endpoint is stored and again before every call and task). Nothing by default."""
        return None

    @abc.abstractmethod
    def validate_connection(self, connection_info: JSON) -> None:
        """Raise ``ConnectionValidationFailed`` with a reason if the cloud is unusable."""

    @abc.abstractmethod
    def list_instances(self, connection_info: JSON, env: JSON) -> list[JSON]:
        """Instance summaries: id, name, instance_name, num_cpu, memory_mb, os_type,
        firmware_type, flavor_name. A malformed instance must not break the listing."""

    @abc.abstractmethod
    def get_instance(self, connection_info: JSON, env: JSON, instance: str) -> JSON:
        """Full ``export_info`` of one instance; ``InstanceNotFound`` if absent or malformed."""

    @abc.abstractmethod
    def list_networks(self, connection_info: JSON, env: JSON) -> list[JSON]:
        """``[{"id", "name"}]``."""

    @abc.abstractmethod
    def list_storage(self, connection_info: JSON, env: JSON) -> JSON:
        """``{"storage_backends": [{"id", "name", "additional_provider_properties"}],
        "config_default": str|None}``."""

    def list_destination_options(
        self, connection_info: JSON, env: JSON, option_names: list[str] | None
    ) -> list[JSON]:
        """``[{"name", "values", "config_default"}]``."""
        return []

    def list_source_options(
        self, connection_info: JSON, env: JSON, option_names: list[str] | None
    ) -> list[JSON]:
        return []


class ExportProvider(abc.ABC):
    """Source side of migrations and replicas."""

    @abc.abstractmethod
    def validate_source_inputs(self, connection_info: JSON, env: JSON, instance: str) -> None: ...

    @abc.abstractmethod
    def deploy_source_resources(
        self, connection_info: JSON, env: JSON, export_info: JSON,
        tracking_id: str | None = None, transfer_id: str | None = None,
        keep_tokens: Iterable[str] = (),
    ) -> JSON:
        """Prepare reading (e.g. point-in-time snapshots of every file of each disk when
        ``env["snapshot"]``); returns ``source_resources`` handed back to ``open_disk_reader``
        and the delete call. With a ``tracking_id`` (a replica's), start native change
        tracking where the platform has it: ``source_resources["cbt"][disk_id]["token"]``
        then marks this moment, and tokens of that ``tracking_id`` other than
        ``keep_tokens`` (the tracking point in force) are dropped. Called again with the
        same ``transfer_id`` after an interrupted call, it replaces what that call left."""

    @abc.abstractmethod
    def open_disk_reader(
        self, connection_info: JSON, env: JSON, export_info: JSON, disk_id: str,
        source_resources: JSON, since: str | None = None,
    ) -> DiskReader:
        """A reader whose ``extents(since)`` yields only what changed after the change
        tracking token ``since`` when that token is still valid, else every allocated range."""

    @abc.abstractmethod
    def delete_source_resources(
        self, connection_info: JSON, env: JSON, source_resources: JSON
    ) -> None:
        """Drop what ``deploy_source_resources`` made, and every change-tracking token of the
        same ``tracking_id`` except those in ``source_resources["keep_tokens"]``;
        ``source_resources`` also carries ``export_info``, ``transfer_id`` and
        ``tracking_id``, to find what a call that died before reporting left."""

    @abc.abstractmethod
    def shutdown_instance(self, connection_info: JSON, env: JSON, export_info: JSON) -> None: ...


class ImportProvider(abc.ABC):
    """Destination side of migrations and replicas."""

    @abc.abstractmethod
    def validate_destination_inputs(
        self, connection_info: JSON, env: JSON, export_info: JSON, check_name_clash: bool = True
    ) -> None:
        """Refuse before any data moves: unknown storage backend or network, and (unless
        ``check_name_clash`` is false, as for replica executions) an existing instance of the
        same name."""

    @abc.abstractmethod
    def create_disks(
        self, connection_info: JSON, env: JSON, export_info: JSON, volumes_info: list[JSON],
        transfer_id: str | None = None,
    ) -> list[JSON]:
        """Create the destination disks that ``volumes_info`` does not already hold. Disks
        half-made by an interrupted call with the same ``transfer_id`` are replaced."""

    @abc.abstractmethod
    def open_disk_writer(self, connection_info: JSON, env: JSON, volume: JSON,
                         transfer_id: str | None = None) -> DiskWriter:
        """A writer for one volume. ``transfer_id`` is the same each time the same task copies
        the same disk, so that a writer across the network can resume an interrupted copy."""

    @abc.abstractmethod
    def delete_disks(self, connection_info: JSON, env: JSON, volumes_info: list[JSON]) -> None: ...

    # Replica disks are always in a known committed state: a snapshot taken before an
    # execution writes them is later either committed or rolled back, and any of the three
    # calls below first finishes what an interrupted one left (each is safe to repeat after a
    # crash at any point). The three return a snapshot outcome: ``{"volumes_info": [...],
    # "committed": id of the last committed snapshot or None, "rolled_back": id of a
    # snapshot rolled back by this call or None, "bytes_restored": int, "finished_commit":
    # bool}``.
    @abc.abstractmethod
    def snapshot_disks(self, connection_info: JSON, env: JSON, volumes_info: list[JSON],
                       snapshot_id: str, for_deploy: bool = False) -> JSON:
        """Settle the volumes (as ``restore_disk_snapshots``), then take a point-in-time
        snapshot of every one for ``snapshot_id`` (an execution's id); the outcome's
        volumes_info records where each snapshot is (``snapshot``, ``snapshot_id``).
        ``for_deploy``: a replica deploy will run the instance on these volumes themselves
        (no ``clone_disks``), so anything may write them (OS morphing, the guest), not only
        this provider's disk writer: the roll-back must undo every write."""

    @abc.abstractmethod
    def restore_disk_snapshots(self, connection_info: JSON, env: JSON,
                               volumes_info: list[JSON]) -> JSON:
        """Settle: roll every volume back to a snapshot that was never committed and drop it;
        drop the snapshots of a committed one whose commit was interrupted."""

    @abc.abstractmethod
    def delete_disk_snapshots(self, connection_info: JSON, env: JSON,
                              volumes_info: list[JSON]) -> JSON:
        """Commit: record, atomically for all the volumes, that their snapshot's execution is
        committed, then drop the snapshots, keeping the volumes as they are."""

    @abc.abstractmethod
    def deploy_instance(
        self, connection_info: JSON, env: JSON, export_info: JSON, volumes_info: list[JSON],
        clone_disks: bool = False, transfer_id: str | None = None,
    ) -> JSON:
        """Define the destination instance over the disks (not started yet, not listed until
        ``finalize_instance``); returns ``instance_deployment_info``. What an interrupted call
        with the same ``transfer_id`` left is replaced."""

    @abc.abstractmethod
    def finalize_instance(
        self, connection_info: JSON, env: JSON, instance_deployment_info: JSON
    ) -> JSON:
        """Make the instance final, atomically; returns ``transfer_result`` (what the API
        shows). Called again once it is final, it returns the same."""

    @abc.abstractmethod
    def cleanup_failed_instance(
        self, connection_info: JSON, env: JSON, instance_deployment_info: JSON
    ) -> None:
        """Remove the instance ``deploy_instance`` defined: its definition first (so a half-
        removed instance is never listed), then the rest; what is already gone is skipped."""

    # --- OS morphing ----------------------------------------------------------------------
    def os_morphing_profile(self, connection_info: JSON, env: JSON, export_info: JSON,
                            instance_deployment_info: JSON) -> JSON:
        """What the destination needs of the guest (``osmorphing.profile.DestinationProfile``
        as JSON): disk bus, NIC model, the NICs' MACs in the order of the source's, cloud-init
        datasources, serial console, the platforms whose agents stay, packages wanted."""
        return {"platform": getattr(self, "platform", "unknown"), "disk_bus": "virtio",
                "nic_model": "virtio",
                "nics": [{"mac": None} for _ in export_info["devices"]["nics"]]}

    def deploy_os_morphing_resources(self, connection_info: JSON, env: JSON,
                                     instance_deployment_info: JSON) -> JSON:
        """Make the deployed instance's disks reachable from this worker; returns
        ``{"disks": [{"path", "format", "name"}]}`` for the libguestfs appliance."""
        raise exceptions.ProviderError(
            f"the {getattr(self, 'platform', 'destination')} provider cannot morph guests; run "
            "the transfer with --skip-os-morphing")

    def delete_os_morphing_resources(self, connection_info: JSON, env: JSON,
                                     os_morphing_resources: JSON) -> None:
        """Undo ``deploy_os_morphing_resources`` (always runs, after success or failure)."""
        return None


class TransferProvider(BaseProvider, ExportProvider, ImportProvider):
    """A provider that can be the source and the destination of transfers."""
