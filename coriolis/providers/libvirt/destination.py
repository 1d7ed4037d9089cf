"""The libvirt provider's destination side: pool volumes, the new domain, replica disks, OS
morphing.

- Disks are volumes of a storage pool (dir pools at least): ``env["storage_backend"]`` or the
  storage mappings name the pool; the format is ``env["disk_format"]`` or the pool's default
  (raw). ``volumes_info`` entries have ``volume_id`` (the volume's key), ``pool``, ``volume``
  (its name), ``path``, ``format``, ``size_bytes``, ``storage_backend`` (the pool).
- Target locations are ``path`` locations of the volumes' files (confined to the pool's
  folder): the worker runs on the host.
- Replica disks are pool volumes with the snapshot / commit / roll-back of
  ``coriolis.providers.local.replica_disks`` on their files; a deploy clones them (new
  volumes) or uses them.
- The domain is defined (never started before ``finalize_instance``) under a pending name
  with coriolis metadata (``<metadata><coriolis:transfer>``), virtio disks and NICs on the
  ``network_map``'s networks, the source's CPUs/memory/firmware unless the destination
  environment overrides them; ``finalize_instance`` renames it to its final name and starts
  it when ``start_instance``; ``cleanup_failed_instance`` undefines it (NVRAM too), then
  deletes its volumes.
- OS morphing: the volumes' paths, opened by the worker's appliance; the profile says virtio.
"""

from __future__ import annotations

from typing import Any

from coriolis.providers.base import (
    DestinationOptionsProvider,
    OSMorphingProvider,
    ReplicaImportProvider,
)

JSON = dict[str, Any]


class LibvirtDestination(DestinationOptionsProvider, ReplicaImportProvider, OSMorphingProvider):
    def destination_environment_schema(self) -> JSON:
        raise NotImplementedError

    def list_destination_options(self, connection_info: JSON, env: JSON,
                                 option_names: list[str] | None) -> list[JSON]:
        raise NotImplementedError

    def validate_destination_inputs(self, connection_info: JSON, env: JSON, export_info: JSON,
                                    check_name_clash: bool = True) -> None:
        raise NotImplementedError

    def create_disks(self, connection_info: JSON, env: JSON, export_info: JSON,
                     volumes_info: list[JSON], transfer_id: str | None = None) -> list[JSON]:
        raise NotImplementedError

    def delete_disks(self, connection_info: JSON, env: JSON, volumes_info: list[JSON]) -> None:
        raise NotImplementedError

    def deploy_target_resources(self, connection_info: JSON, env: JSON, export_info: JSON,
                                volumes_info: list[JSON],
                                transfer_id: str | None = None) -> JSON:
        raise NotImplementedError

    def delete_target_resources(self, connection_info: JSON, env: JSON,
                                target_resources: JSON) -> None:
        raise NotImplementedError

    def snapshot_disks(self, connection_info: JSON, env: JSON, volumes_info: list[JSON],
                       snapshot_id: str, for_deploy: bool = False) -> JSON:
        raise NotImplementedError

    def restore_disk_snapshots(self, connection_info: JSON, env: JSON,
                               volumes_info: list[JSON]) -> JSON:
        raise NotImplementedError

    def delete_disk_snapshots(self, connection_info: JSON, env: JSON,
                              volumes_info: list[JSON]) -> JSON:
        raise NotImplementedError

    def deploy_instance(self, connection_info: JSON, env: JSON, export_info: JSON,
                        volumes_info: list[JSON], clone_disks: bool = False,
                        transfer_id: str | None = None) -> JSON:
        raise NotImplementedError

    def finalize_instance(self, connection_info: JSON, env: JSON,
                          instance_deployment_info: JSON) -> JSON:
        raise NotImplementedError

    def cleanup_failed_instance(self, connection_info: JSON, env: JSON,
                                instance_deployment_info: JSON) -> None:
        raise NotImplementedError

    def os_morphing_profile(self, connection_info: JSON, env: JSON, export_info: JSON,
                            instance_deployment_info: JSON) -> JSON:
        raise NotImplementedError

    def deploy_os_morphing_resources(self, connection_info: JSON, env: JSON,
                                     instance_deployment_info: JSON) -> JSON:
        raise NotImplementedError
