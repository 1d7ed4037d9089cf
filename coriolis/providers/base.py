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

    [{"disk_id": str, "volume_id": str, "size_bytes": int, "storage_backend": str,
      "format": str, ...provider keys locating the volume}]

``volume_id`` names the volume uniquely on its platform (a Cinder volume id, a libvirt volume
key, a local file path): ``coriolis.transfer.manifests`` keeps a volume's block manifests
under it.

``source_resources`` (what ``deploy_source_resources`` returns)::

    {"disks": {disk_id: source location JSON}, "cbt": {disk_id: {"token": str, ...}},
     ...provider keys}

``target_resources`` (what ``deploy_target_resources`` returns)::

    {"disks": {disk_id: target location JSON}, ...provider keys}

Locations are ``coriolis.transfer.locations`` values as JSON; ``transfer/`` opens the readers
and writers for them, with the transfer options (``coriolis.transfer.options``) of the
destination environment, which every import provider's schema gets.

The destination environment given to import methods already contains ``network_map``
(source network → destination network) and ``storage_mappings`` (``default``,
``backend_mappings``, ``disk_mappings``), as upstream does.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from coriolis import constants as c
from coriolis import exceptions

if TYPE_CHECKING:
    from coriolis.config import Settings
    from coriolis.transfer.base import DiskReader
    from coriolis.transfer.locations import PlatformLocation

JSON = dict[str, Any]


class Capability(enum.StrEnum):
    """What a provider can do, one interface each (``../shared/DESIGN.md``, Providers)."""

    ENDPOINT = "endpoint"
    INSTANCES = "instances"
    NETWORKS = "networks"
    STORAGE = "storage"
    SOURCE_OPTIONS = "source_options"
    DESTINATION_OPTIONS = "destination_options"
    EXPORT = "export"
    REPLICA_EXPORT = "replica_export"
    IMPORT = "import"
    REPLICA_IMPORT = "replica_import"
    MINION_POOL = "minion_pool"
    OS_MORPHING = "os_morphing"


class BaseProvider(abc.ABC):
    """The endpoint capability, which every provider has: connection schema and checks.

    A provider class inherits this and the capability interfaces below that its platform has;
    ``capabilities`` and ``provider_types`` are derived from them."""

    platform: ClassVar[str]
    capability: ClassVar[Capability] = Capability.ENDPOINT

    @abc.abstractmethod
    def connection_info_schema(self) -> JSON: ...

    def check_location(self, connection_info: JSON, project_id: str,
                       settings: Settings) -> None:
        """Raise ``LocationNotAllowed`` naming the field if ``connection_info`` reaches a place
        on this server's hosts that project ``project_id`` may not use (checked when an
        endpoint is stored and again before every call and task). Nothing by default."""
        return None

    @abc.abstractmethod
    def validate_connection(self, connection_info: JSON) -> str | None:
        """Raise ``ConnectionValidationFailed`` with a reason if the cloud is unusable.
        May return a sentence saying what was reached (a version, a host), which the API
        answers as the validate-connection ``message``."""


class InstancesProvider(abc.ABC):
    capability: ClassVar[Capability] = Capability.INSTANCES

    @abc.abstractmethod
    def list_instances(self, connection_info: JSON, env: JSON) -> list[JSON]:
        """Instance summaries: id, name, instance_name, num_cpu, memory_mb, os_type,
        firmware_type, flavor_name. A malformed instance must not break the listing (it is
        listed with an ``error`` key, or left out)."""

    @abc.abstractmethod
    def get_instance(self, connection_info: JSON, env: JSON, instance: str) -> JSON:
        """Full ``export_info`` of one instance; ``InstanceNotFound`` if absent, ``InvalidInput``
        naming what is wrong if malformed."""


class NetworksProvider(abc.ABC):
    capability: ClassVar[Capability] = Capability.NETWORKS

    @abc.abstractmethod
    def list_networks(self, connection_info: JSON, env: JSON) -> list[JSON]:
        """``[{"id", "name"}]``."""


class StorageProvider(abc.ABC):
    capability: ClassVar[Capability] = Capability.STORAGE

    @abc.abstractmethod
    def list_storage(self, connection_info: JSON, env: JSON) -> JSON:
        """``{"storage_backends": [{"id", "name", "additional_provider_properties"}],
        "config_default": str|None}``."""


class SourceOptionsProvider(abc.ABC):
    capability: ClassVar[Capability] = Capability.SOURCE_OPTIONS

    @abc.abstractmethod
    def list_source_options(self, connection_info: JSON, env: JSON,
                            option_names: list[str] | None) -> list[JSON]:
        """``[{"name", "values", "config_default"}]``, only ``option_names`` when given."""


class DestinationOptionsProvider(abc.ABC):
    capability: ClassVar[Capability] = Capability.DESTINATION_OPTIONS

    @abc.abstractmethod
    def list_destination_options(self, connection_info: JSON, env: JSON,
                                 option_names: list[str] | None) -> list[JSON]:
        """``[{"name", "values", "config_default"}]``, only ``option_names`` when given."""


class ExportProvider(abc.ABC):
    """Source side of migrations: read an instance's disks."""

    capability: ClassVar[Capability] = Capability.EXPORT

    @abc.abstractmethod
    def source_environment_schema(self) -> JSON: ...

    @abc.abstractmethod
    def validate_source_inputs(self, connection_info: JSON, env: JSON, instance: str) -> None: ...

    @abc.abstractmethod
    def deploy_source_resources(
        self, connection_info: JSON, env: JSON, export_info: JSON,
        tracking_id: str | None = None, transfer_id: str | None = None,
        keep_tokens: Iterable[str] = (),
    ) -> JSON:
        """Make every disk of the instance readable; returns ``source_resources``, whose
        ``disks`` maps each disk id to a source location (``transfer.locations``: a path on
        the worker, an NBD URI, a platform reader) that stays readable until
        ``delete_source_resources``. E.g. point-in-time snapshots of every file of each disk
        when ``env["snapshot"]``. With a ``tracking_id`` (a replica's, see
        ``ReplicaExportProvider``), start native change tracking where the platform has it:
        ``source_resources["cbt"][disk_id]["token"]`` then marks this moment, and tokens of
        that ``tracking_id`` other than ``keep_tokens`` (the tracking point in force, which a
        reader may be asked for changes since) are dropped. Called again with the same
        ``transfer_id`` after an interrupted call, it replaces what that call left."""

    @abc.abstractmethod
    def delete_source_resources(
        self, connection_info: JSON, env: JSON, source_resources: JSON
    ) -> None:
        """Drop what ``deploy_source_resources`` made, and every change-tracking token of the
        same ``tracking_id`` except those in ``source_resources["keep_tokens"]``;
        ``source_resources`` also carries ``export_info``, ``transfer_id`` and
        ``tracking_id``, to find what a call that died before reporting left. Idempotent."""

    @abc.abstractmethod
    def shutdown_instance(self, connection_info: JSON, env: JSON, export_info: JSON) -> None:
        """Stop the source instance; stopping a stopped one changes nothing."""

    def open_platform_reader(self, connection_info: JSON, env: JSON,
                             location: PlatformLocation) -> DiskReader:
        """A ``DiskReader`` of a ``platform`` source location this provider returned (a block
        API such as EBS direct, a datastore read with a session): the worker calls it for
        such locations (``transfer.locations.open_reader``) with the source endpoint's
        connection info. ``extents(since=token)`` answers a change-tracking token of
        ``source_resources["cbt"]`` where the platform can. Errors name the disk, never a
        secret. Only providers that return platform locations implement it."""
        raise exceptions.ProviderError(
            f"provider '{getattr(self, 'platform', type(self).__name__)}' has no platform "
            f"reader for '{location.platform}' locations")


class ReplicaExportProvider(ExportProvider):
    """Source side of replicas: ``deploy_source_resources`` honours ``tracking_id`` (native
    change tracking where the platform has it; without it, the worker's block manifests find
    the changes), and its locations answer ``since`` a token in force."""

    capability: ClassVar[Capability] = Capability.REPLICA_EXPORT


class ImportProvider(abc.ABC):
    """Destination side of migrations: disks, where they are written, the instance."""

    capability: ClassVar[Capability] = Capability.IMPORT

    @abc.abstractmethod
    def destination_environment_schema(self) -> JSON:
        """The provider's own keys; the API adds the transfer options
        (``coriolis.transfer.options.TRANSFER_OPTIONS_SCHEMA``) to it."""

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
    def delete_disks(self, connection_info: JSON, env: JSON, volumes_info: list[JSON]) -> None:
        """Delete the volumes; what is already gone is skipped."""

    @abc.abstractmethod
    def deploy_target_resources(
        self, connection_info: JSON, env: JSON, export_info: JSON, volumes_info: list[JSON],
        transfer_id: str | None = None,
    ) -> JSON:
        """Make every volume writable; returns ``target_resources``, whose ``disks`` maps each
        disk id to a target location (``transfer.locations``: a path on the worker, or a
        writer agent on a helper machine or another host) at least as large as the volume.
        A location that does not exist or is too small is an error naming it. Called again
        with the same ``transfer_id`` after an interrupted call, it replaces what that call
        left."""

    @abc.abstractmethod
    def delete_target_resources(self, connection_info: JSON, env: JSON,
                                target_resources: JSON) -> None:
        """Undo ``deploy_target_resources`` (detach volumes, stop helpers), keeping the
        volumes; ``target_resources`` may be empty or half-made. Idempotent."""

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


class ReplicaImportProvider(ImportProvider):
    """Destination side of replicas: replica disks are always in a known committed state.

    A snapshot taken before an execution writes them is later either committed or rolled
    back, and any of the three calls below first finishes what an interrupted one left (each
    is safe to repeat after a crash at any point). The three return a snapshot outcome:
    ``{"volumes_info": [...], "committed": id of the last committed snapshot or None,
    "rolled_back": id of a snapshot rolled back by this call or None, "bytes_restored": int,
    "finished_commit": bool}``."""

    capability: ClassVar[Capability] = Capability.REPLICA_IMPORT

    @abc.abstractmethod
    def snapshot_disks(self, connection_info: JSON, env: JSON, volumes_info: list[JSON],
                       snapshot_id: str, for_deploy: bool = False) -> JSON:
        """Settle the volumes (as ``restore_disk_snapshots``), then take a point-in-time
        snapshot of every one for ``snapshot_id`` (an execution's id); the outcome's
        volumes_info records where each snapshot is (``snapshot``, ``snapshot_id``).
        ``for_deploy``: a replica deploy will run the instance on these volumes themselves
        (no ``clone_disks``), so anything may write them (OS morphing, the guest), not only
        the disk writer: the roll-back must undo every write."""

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


class OSMorphingProvider(abc.ABC):
    """The destination's guest needs, and its new instance's disks opened for morphing."""

    capability: ClassVar[Capability] = Capability.OS_MORPHING

    @abc.abstractmethod
    def os_morphing_profile(self, connection_info: JSON, env: JSON, export_info: JSON,
                            instance_deployment_info: JSON) -> JSON:
        """What the destination needs of the guest (``osmorphing.profile.DestinationProfile``
        as JSON): disk bus, NIC model, the NICs' MACs in the order of the source's, cloud-init
        datasources, serial console, the platforms whose agents stay, packages wanted."""

    @abc.abstractmethod
    def deploy_os_morphing_resources(self, connection_info: JSON, env: JSON,
                                     instance_deployment_info: JSON) -> JSON:
        """Make the deployed instance's disks reachable by a libguestfs appliance; returns
        ``{"disks": [{"path", "format", "name"}], "helper": None | {"url", "fingerprint",
        "key_ref"}}``. Without ``helper`` (the default) the worker runs the appliance on the
        paths, which are its own. With one, a helper machine that has the disks attached (for
        clouds whose volumes cannot be attached to the worker) runs it: a writer agent
        (``coriolis-server writer``) at ``url`` (``https://``), its certificate pinned by
        ``fingerprint`` (SHA-256), its agent key found at ``key_ref``, a dotted path into the
        destination endpoint's connection_info (``"writer.key"``; no secret in the resources);
        the paths are the helper's and must be under the agent's roots."""

    def delete_os_morphing_resources(self, connection_info: JSON, env: JSON,
                                     os_morphing_resources: JSON) -> None:
        """Undo ``deploy_os_morphing_resources`` (always runs, after success or failure);
        idempotent."""
        return None


def require_linux_destination_pool(provider: str, why: str, pool_platform: str,
                                   os_type: str) -> None:
    """``InvalidInput`` naming ``platform`` or ``os_type`` unless the pool is a Linux
    destination pool (the only kind ``provider``'s minions make, ``why`` says why)."""
    if pool_platform != "destination":
        raise exceptions.InvalidInput(
            f"platform: {why}; a {provider} pool must be a 'destination' pool")
    if os_type != "linux":
        raise exceptions.InvalidInput(f"os_type: {provider} minions run Linux ('linux')")


def require_linux_pool(provider: str, platforms: frozenset[str], pool_platform: str,
                       os_type: str) -> None:
    """``InvalidInput`` naming ``platform`` or ``os_type`` unless the pool is a Linux pool of
    one of ``platforms`` (those ``provider``'s minions serve)."""
    if pool_platform not in platforms:
        raise exceptions.InvalidInput(
            f"platform: a {provider} pool must be one of "
            f"{', '.join(repr(p) for p in sorted(platforms))}")
    if os_type != "linux":
        raise exceptions.InvalidInput(f"os_type: {provider} minions run Linux ('linux')")


class MinionPoolProvider(abc.ABC):
    """Helper machines of the platform (issue 17 fills this interface in): a minion runs the
    writer agent, the reader side or the morphing appliance, with a transfer's volumes
    attached."""

    capability: ClassVar[Capability] = Capability.MINION_POOL
    # The pool platforms the provider makes minions for ("source": they read the disks of
    # exports, "destination": they write imported disks or morph them).
    minion_pool_platforms: ClassVar[frozenset[str]] = frozenset({"source", "destination"})

    @abc.abstractmethod
    def minion_pool_environment_schema(self) -> JSON:
        """JSON schema of a pool's ``environment_options``."""

    @abc.abstractmethod
    def validate_minion_pool_options(self, connection_info: JSON, env: JSON,
                                     pool_platform: str, os_type: str) -> None:
        """``InvalidInput`` naming the option when the pool (``pool_platform`` ``source`` or
        ``destination``, ``os_type``) cannot be made with these options."""

    @abc.abstractmethod
    def set_up_pool_shared_resources(self, connection_info: JSON, env: JSON,
                                     pool_id: str) -> JSON:
        """Make what every minion of the pool shares; returns it (no secrets). Re-running
        with the same ``pool_id`` finds or replaces what an interrupted call made."""

    @abc.abstractmethod
    def tear_down_pool_shared_resources(self, connection_info: JSON, env: JSON, pool_id: str,
                                        shared_resources: JSON | None) -> None:
        """Remove what ``set_up_pool_shared_resources`` made; nothing there is no error."""

    @abc.abstractmethod
    def create_minion(self, connection_info: JSON, env: JSON, pool_id: str, machine_id: str,
                      shared_resources: JSON | None) -> JSON:
        """Make and start one minion named after ``machine_id`` (a re-run replaces a half-made
        one). Returns ``{"provider_properties": {...} (no secrets), "connection_info":
        {...} (secrets, stored encrypted, masked in the API)}``."""

    @abc.abstractmethod
    def delete_minion(self, connection_info: JSON, env: JSON, pool_id: str, machine_id: str,
                      provider_properties: JSON) -> None:
        """Stop and remove the minion; a minion already gone is no error."""

    @abc.abstractmethod
    def power_off_minion(self, connection_info: JSON, env: JSON, pool_id: str,
                         machine_id: str, provider_properties: JSON) -> JSON:
        """Stop it, keeping what it is made of; returns its new ``provider_properties``."""

    @abc.abstractmethod
    def power_on_minion(self, connection_info: JSON, env: JSON, pool_id: str,
                        machine_id: str, provider_properties: JSON) -> JSON:
        """Start a powered-off minion; returns ``{"provider_properties", "connection_info"}``
        as ``create_minion``."""

    @abc.abstractmethod
    def healthcheck_minion(self, connection_info: JSON, env: JSON, pool_id: str,
                           machine_id: str, provider_properties: JSON,
                           minion_connection_info: JSON) -> None:
        """``ProviderError`` saying what is wrong when the minion cannot serve."""

    @abc.abstractmethod
    def minion_target_resources(self, connection_info: JSON, env: JSON, export_info: JSON,
                                volumes_info: list[JSON], minion_connection_info: JSON,
                                key_ref: str) -> JSON:
        """``deploy_target_resources``' result for a transfer whose destination disks are
        written through the minion (``{"disks": {disk_id: location}}``); the minion's agent
        key is found at ``key_ref`` in the connection info the worker gets."""

    def minion_source_resources(self, connection_info: JSON, env: JSON, export_info: JSON,
                                minion_connection_info: JSON, key_ref: str, *,
                                tracking_id: str | None = None,
                                transfer_id: str | None = None,
                                keep_tokens: Iterable[str] = ()) -> JSON:
        """``deploy_source_resources``' result for a transfer whose source disks are read
        through a minion of a source pool (a provider whose ``minion_pool_platforms`` has
        ``"source"`` implements it): the same keys (``cbt``, ``point_in_time``, what
        ``delete_source_resources`` needs to undo it, which the worker calls as for any
        source resources), with ``disks`` mapping each disk id to an ``agent`` source
        location (``transfer.locations``) on the minion's agent (``minion_connection_info``:
        ``url``, ``fingerprint``, ``machine_id``, ``pool_id``; no secret), whose agent key
        is found at ``key_ref`` in the source connection info the worker gets. The disks
        are attached to the minion (or already under its roots) read-only; ``tracking_id``,
        ``transfer_id`` and ``keep_tokens`` as for ``deploy_source_resources`` (the agent
        lists the changes since a token its disk carries). ``ProviderError`` naming the
        instance or disk when it cannot be read there (e.g. a disk outside what the minion
        serves); never a secret."""
        raise exceptions.ProviderError(
            f"provider '{getattr(self, 'platform', type(self).__name__)}' reads no source "
            "disks through minions")


class MinionOsMorphingProvider(abc.ABC):
    """Minions of this provider's destination pools can be the OS-morphing helper of a new
    instance (``--osmorphing-minion-pool-mapping VM=POOL``)."""

    @abc.abstractmethod
    def minion_os_morphing_resources(self, connection_info: JSON, env: JSON,
                                     instance_deployment_info: JSON,
                                     minion_connection_info: JSON, key_ref: str) -> JSON:
        """``deploy_os_morphing_resources``' result (``{"disks": [{"path", "format",
        "name"}], "helper": {"url", "fingerprint", "key_ref"}}``) with the minion's agent
        (``minion_connection_info``: ``url``, ``fingerprint``) as the helper, which runs the
        libguestfs appliance on the disks as the minion sees them; its agent key is found at
        ``key_ref`` in the connection info the worker gets."""


# The upstream provider type bits each capability gives (upstream derives them from the base
# classes a provider inherits the same way; the validation and replica-update bits come with
# the interface that carries those methods).
TYPE_BITS: dict[Capability, int] = {
    Capability.ENDPOINT: c.PROVIDER_TYPE_ENDPOINT,
    Capability.INSTANCES: c.PROVIDER_TYPE_ENDPOINT_INSTANCES,
    Capability.NETWORKS: c.PROVIDER_TYPE_ENDPOINT_NETWORKS,
    Capability.STORAGE: c.PROVIDER_TYPE_ENDPOINT_STORAGE,
    Capability.SOURCE_OPTIONS: c.PROVIDER_TYPE_SOURCE_ENDPOINT_OPTIONS,
    Capability.DESTINATION_OPTIONS: c.PROVIDER_TYPE_DESTINATION_ENDPOINT_OPTIONS,
    Capability.EXPORT: c.PROVIDER_TYPE_EXPORT | c.PROVIDER_TYPE_VALIDATE_MIGRATION_EXPORT,
    Capability.REPLICA_EXPORT: (c.PROVIDER_TYPE_REPLICA_EXPORT
                                | c.PROVIDER_TYPE_VALIDATE_REPLICA_EXPORT
                                | c.PROVIDER_TYPE_SOURCE_REPLICA_UPDATE),
    Capability.IMPORT: c.PROVIDER_TYPE_IMPORT | c.PROVIDER_TYPE_VALIDATE_MIGRATION_IMPORT,
    Capability.REPLICA_IMPORT: (c.PROVIDER_TYPE_REPLICA_IMPORT
                                | c.PROVIDER_TYPE_VALIDATE_REPLICA_IMPORT
                                | c.PROVIDER_TYPE_DESTINATION_REPLICA_UPDATE),
    Capability.OS_MORPHING: c.PROVIDER_TYPE_OS_MORPHING,
    Capability.MINION_POOL: 0,  # source/destination pool bits: by EXPORT/IMPORT, below
}

INTERFACES: tuple[type, ...] = (
    BaseProvider, InstancesProvider, NetworksProvider, StorageProvider, SourceOptionsProvider,
    DestinationOptionsProvider, ExportProvider, ReplicaExportProvider, ImportProvider,
    ReplicaImportProvider, OSMorphingProvider, MinionPoolProvider)


def capabilities(provider: BaseProvider | type[BaseProvider]) -> frozenset[Capability]:
    """The capabilities a provider (class or instance) declares by the interfaces it has."""
    cls = provider if isinstance(provider, type) else type(provider)
    return frozenset(i.capability for i in INTERFACES if issubclass(cls, i))  # type: ignore[attr-defined]


def provider_types(provider: BaseProvider | type[BaseProvider]) -> int:
    """The upstream ``PROVIDER_TYPE_*`` bitmask of a provider, from its capabilities."""
    caps = capabilities(provider)
    bits = 0
    for cap in caps:
        bits |= TYPE_BITS[cap]
    if Capability.MINION_POOL in caps:
        sides: frozenset[str] = getattr(provider, "minion_pool_platforms", frozenset())
        if Capability.EXPORT in caps and "source" in sides:
            bits |= c.PROVIDER_TYPE_SOURCE_MINION_POOL
        if Capability.IMPORT in caps and "destination" in sides:
            bits |= c.PROVIDER_TYPE_DESTINATION_MINION_POOL
    return bits


def missing_capability(provider: BaseProvider, capability: Capability) -> str | None:
    """A sentence naming the provider and the capability it lacks, or None if it has it."""
    if capability in capabilities(provider):
        return None
    return (f"provider '{provider.platform}' lacks the '{capability}' capability")


# The capability each endpoint operation (a synchronous call on a worker) needs.
OPERATION_CAPABILITY: dict[str, Capability] = {
    "validate_connection": Capability.ENDPOINT,
    "list_instances": Capability.INSTANCES,
    "get_instance": Capability.INSTANCES,
    "list_networks": Capability.NETWORKS,
    "list_storage": Capability.STORAGE,
    "list_source_options": Capability.SOURCE_OPTIONS,
    "list_destination_options": Capability.DESTINATION_OPTIONS,
    "validate_destination_inputs": Capability.IMPORT,
    # minion pools: run for the pool manager only (coriolis.minions), never asked by the API
    "validate_minion_pool_options": Capability.MINION_POOL,
    "set_up_pool_shared_resources": Capability.MINION_POOL,
    "tear_down_pool_shared_resources": Capability.MINION_POOL,
    "create_minion": Capability.MINION_POOL,
    "delete_minion": Capability.MINION_POOL,
    "power_off_minion": Capability.MINION_POOL,
    "power_on_minion": Capability.MINION_POOL,
    "healthcheck_minion": Capability.MINION_POOL,
}
POOL_OPERATIONS = frozenset(op for op, cap in OPERATION_CAPABILITY.items()
                            if cap == Capability.MINION_POOL)


def require(provider: BaseProvider, interface: type[Any]) -> Any:
    """``provider`` as ``interface``; ``InvalidInput`` naming both when it lacks it."""
    if not isinstance(provider, interface):
        raise exceptions.InvalidInput(
            f"provider '{provider.platform}' lacks the '{interface.capability}' capability")
    return provider
