"""The libvirt provider's endpoint side: connection schema and check, networks, storage.

- ``validate_connection`` connects and reports the hypervisor and its version (upstream
  Coriolis answers ``{"valid": true}``; the message our API shows names them).
- Networks: libvirt networks and the host's bridges (``id``/``name``: the network's name, or
  ``bridge:<name>`` for a bare bridge).
- Storage: the storage pools, ``config_default`` the pool named ``default`` if there is one.
"""

from __future__ import annotations

from typing import Any

from coriolis.providers.base import BaseProvider, NetworksProvider, StorageProvider
from coriolis.providers.libvirt.connection import CONNECTION_SCHEMA

JSON = dict[str, Any]


class LibvirtEndpoint(BaseProvider, NetworksProvider, StorageProvider):
    platform = "libvirt"

    def connection_info_schema(self) -> JSON:
        return CONNECTION_SCHEMA

    def validate_connection(self, connection_info: JSON) -> None:
        raise NotImplementedError

    def list_networks(self, connection_info: JSON, env: JSON) -> list[JSON]:
        raise NotImplementedError

    def list_storage(self, connection_info: JSON, env: JSON) -> JSON:
        raise NotImplementedError
