"""Resolution of network and storage mappings, shared by every import provider."""

from __future__ import annotations

from typing import Any


def storage_backend_for_disk(disk: dict[str, Any], env: dict[str, Any],
                             config_default: str | None) -> str | None:
    """Precedence: per-disk mapping > per-backend mapping > mappings default >
    ``env["storage_backend"]`` > the platform's default."""
    mappings = env.get("storage_mappings") or {}
    for item in mappings.get("disk_mappings") or []:
        if item.get("disk_id") == disk.get("id"):
            return item["destination"]
    for item in mappings.get("backend_mappings") or []:
        if disk.get("storage_backend") is not None and item.get("source") == disk.get(
                "storage_backend"):
            return item["destination"]
    return mappings.get("default") or env.get("storage_backend") or config_default


def destination_network(source_network: str, env: dict[str, Any],
                        destination_networks: list[str]) -> str | None:
    """The mapped network, or the same name if it exists at the destination, else None."""
    network_map = env.get("network_map") or {}
    if source_network in network_map:
        return network_map[source_network]
    return source_network if source_network in destination_networks else None
