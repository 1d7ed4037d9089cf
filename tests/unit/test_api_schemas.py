"""The request models take every body python-coriolisclient sends, exactly as observed on the
wire (shared/reference/coriolis-v1-api.md §3, and tests/unit/client/test_cli_wire.py), and give
the engine the same keys back; the request body limit setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from coriolis.api.schemas import resources, transfers
from coriolis.config import ConfigError, Settings

EP = "11111111-1111-1111-1111-111111111111"
M1 = {"origin_endpoint_id": "<uuid>", "destination_endpoint_id": "<uuid>",
      "destination_environment": {"d": 1}, "instances": ["vm1"], "skip_os_morphing": True,
      "network_map": {"n": "m"}, "notes": None, "storage_mappings": {},
      "user_scripts": {"global": {}, "instances": {}}, "source_environment": {"s": 1},
      "shutdown_instances": True, "replication_count": 3}
R1 = {"origin_endpoint_id": "...", "destination_endpoint_id": "...",
      "destination_environment": {"d": 1}, "instances": ["vm1", "vm2"],
      "scenario": "live_migration", "network_map": {"n": "m"}, "notes": "hello",
      "storage_mappings": {"default": "lvm", "disk_mappings": [
          {"disk_id": "d1", "destination": "lvm"}], "backend_mappings": [
          {"source": "a", "destination": "b"}]},
      "user_scripts": {"global": {"linux": "<file text>"}, "instances": {"vm1": "<file text>"}},
      "source_environment": {"s": 1}, "origin_minion_pool_id": "p1",
      "destination_minion_pool_id": "p2", "instance_osmorphing_minion_pool_mappings": {
          "vm1": "p3"}}
OBSERVED: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (transfers.MigrationRequest, {"migration": M1}),
    (transfers.MigrationRequest, {"migration": {
        **M1, "user_scripts": {"global": {"linux": None}, "instances": {}},
        "storage_mappings": {"disk_mappings": [{"disk_id": "disk0", "destination": "fast"}]}}}),
    (transfers.MigrationRequest, {"migration": {
        "replica_id": "r1", "clone_disks": False, "force": False, "skip_os_morphing": False,
        "user_scripts": {"global": {}, "instances": {}},
        "instance_osmorphing_minion_pool_mappings": {}}}),
    (transfers.MigrationRequest, {"migration": {
        "replica_id": "r1", "clone_disks": True, "force": False, "skip_os_morphing": False,
        "user_scripts": None}}),
    (transfers.DeploymentRequest, {"deployment": {
        "replica_id": "r1", "clone_disks": True, "force": True, "skip_os_morphing": True,
        "user_scripts": None}}),
    (transfers.ReplicaRequest, {"replica": R1}),
    (transfers.ReplicaUpdateRequest, {"replica": {"user_scripts": {"global": {},
                                                                   "instances": {}}}}),
    (transfers.ReplicaUpdateRequest, {"replica": {
        "destination_environment": {"d": 2}, "notes": "n", "origin_minion_pool_id": None,
        "destination_minion_pool_id": None, "user_scripts": {"global": {}, "instances": {}}}}),
    (transfers.ExecutionRequest, {"execution": {"shutdown_instances": False}}),
    (transfers.CancelAction, {"cancel": {"force": True}}),
    (transfers.CancelAction, {"cancel": None}),
    (transfers.ReplicaAction, {"delete-disks": None}),
    (transfers.ScheduleCreate, {"schedule": {"minute": 5, "hour": 3, "dom": 1, "month": 2,
                                             "dow": 6}, "enabled": False,
                                "shutdown_instance": True,
                                "expiration_date": "2030-01-02T01:04:05Z"}),
    (transfers.ScheduleUpdate, {"shutdown_instance": False}),
    (transfers.ScheduleUpdate, {"expiration_date": None}),
    (resources.EndpointRequest, {"endpoint": {
        "name": "src", "type": "local", "description": None,
        "connection_info": {"secret_ref": "http://h/key-manager/v1/secrets/s"},
        "mapped_regions": []}}),
    (resources.EndpointUpdateRequest, {"endpoint": {}}),
    (resources.EndpointAction, {"validate-connection": None}),
    (resources.RegionRequest, {"region": {"name": "eu", "description": ""}}),
    (resources.RegionRequest, {"region": {"name": "eu", "description": "", "enabled": False}}),
    (resources.RegionUpdateRequest, {"region": {}}),
    (resources.ServiceRequest, {"service": {"host": "h", "binary": "b", "topic": "t",
                                            "mapped_regions": [], "enabled": True}}),
    (resources.ServiceUpdateRequest, {"service": {"mapped_regions": [], "enabled": False}}),
    (resources.MinionPoolRequest, {"minion_pool": {
        "name": "p", "endpoint_id": EP, "platform": "source", "os_type": "linux",
        "environment_options": {}, "skip_allocation": False, "minimum_minions": 1,
        "minion_retention_strategy": "delete"}}),
    (resources.SecretCreate, {"payload": "{}", "payload_content_type": "text/plain",
                              "name": None, "algorithm": None, "expiration": None}),
]


@pytest.mark.parametrize("model, body", OBSERVED, ids=[f"{m.__name__}-{i}" for i, (m, _)
                                                       in enumerate(OBSERVED)])
def test_observed_client_bodies_validate_and_round_trip(model: type[BaseModel],
                                                        body: dict[str, Any]) -> None:
    parsed = model.model_validate(body)
    dumped = parsed.model_dump(by_alias=True, exclude_unset=True)
    if model is transfers.ScheduleCreate:  # the date comes back parsed (naive UTC)
        assert dumped.pop("expiration_date").isoformat() == "2030-01-02T01:04:05"
        body = {k: v for k, v in body.items() if k != "expiration_date"}
    if model is resources.SecretCreate:  # Barbican fields this store does not use
        body = {k: v for k, v in body.items() if k in ("payload", "payload_content_type",
                                                       "name")}
    assert dumped == body


def test_the_body_limit_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    monkeypatch.delenv("CORIOLIS_MAX_REQUEST_BODY_BYTES", raising=False)
    monkeypatch.delenv("CORIOLIS_CONFIG_FILE", raising=False)
    assert Settings(data_dir=tmp_path).max_request_body_bytes == 1024 * 1024
    (tmp_path / "coriolis.conf").write_text("[api]\nmax_request_body_size = 65536\n")
    assert Settings(data_dir=tmp_path).max_request_body_bytes == 65536
    monkeypatch.setenv("CORIOLIS_MAX_REQUEST_BODY_BYTES", "2048")
    assert Settings(data_dir=tmp_path).max_request_body_bytes == 2048
    for bad in ("lots", "10"):
        monkeypatch.setenv("CORIOLIS_MAX_REQUEST_BODY_BYTES", bad)
        with pytest.raises(ConfigError, match="max request body size"):
            Settings(data_dir=tmp_path)


def test_an_error_names_an_instance_called_like_a_union_tag() -> None:
    """The tag of the migration body kind (``new``/``deploy``) is dropped from error paths
    only where pydantic puts it, not from a field path that happens to hold the same word."""
    from pydantic import ValidationError

    from coriolis.api.errors import describe

    body = {**M1, "instances": ["new"], "user_scripts": {"instances": {"new": 5}}}
    with pytest.raises(ValidationError) as raised:
        transfers.MigrationRequest.model_validate({"migration": body})
    assert "migration.user_scripts.instances.new: " in describe(raised.value.errors())
