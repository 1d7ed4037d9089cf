"""The local provider's source and target locations (real clouds, real files): what
``deploy_source_resources`` and ``deploy_target_resources`` return, that the worker's
``transfer.locations`` opens them, and that no agent key is in them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coriolis import exceptions
from coriolis.cmd.local_cloud import add_instance, init_cloud
from coriolis.providers.local.provider import LocalProvider
from coriolis.transfer.locations import from_json, open_reader, open_writer
from coriolis.transfer.options import TransferOptions

MiB = 1024 * 1024
ENV = {"network_map": {"lan": "lan"}, "storage_mappings": {}}


def clouds(tmp_path: Path) -> tuple[dict, dict, dict]:
    src = init_cloud(tmp_path / "src")
    add_instance(src, "vm1", disk_size="4M", disk_format="qcow2", seed=1)
    dst = init_cloud(tmp_path / "dst")
    provider = LocalProvider()
    src_conn, dst_conn = {"path": str(src)}, {"path": str(dst)}
    return src_conn, dst_conn, provider.get_instance(src_conn, {}, "vm1")


@pytest.mark.parametrize("snapshot", [False, True])
def test_source_locations_are_confined_path_locations(tmp_path: Path, snapshot: bool) -> None:
    src_conn, _, export_info = clouds(tmp_path)
    provider = LocalProvider()
    resources = provider.deploy_source_resources(src_conn, {"snapshot": snapshot}, export_info)
    location = from_json(resources["disks"]["disk0"])
    assert location.kind == "path" and location.format == "qcow2"  # type: ignore[union-attr]
    assert location.what == "instance 'vm1': disk file disk0.qcow2"  # type: ignore[union-attr]
    assert (".coriolis" in location.path) == snapshot  # type: ignore[union-attr]
    assert location.confine  # type: ignore[union-attr]
    reader = open_reader(resources["disks"]["disk0"])
    assert reader.size == 4 * MiB
    reader.close()
    provider.delete_source_resources(src_conn, {"snapshot": snapshot}, resources)


def test_target_locations_path_or_agent_and_no_key(tmp_path: Path) -> None:
    _, dst_conn, export_info = clouds(tmp_path)
    provider = LocalProvider()
    volumes = provider.create_disks(dst_conn, ENV, export_info, [])
    assert volumes[0]["volume_id"] and len({v["volume_id"] for v in volumes}) == len(volumes)
    resources = provider.deploy_target_resources(dst_conn, ENV, export_info, volumes)
    location = resources["disks"]["disk0"]
    assert location == {"kind": "path", "path": volumes[0]["path"],
                        "format": volumes[0]["format"], "confine": [],
                        "what": "destination disk disk0", "journal": None}
    writer = open_writer(location, options=TransferOptions(), transfer_id="t",
                         connection_info=dst_conn, size=volumes[0]["size_bytes"])
    writer.close()
    # A raw replica volume snapshotted by an undo journal: its location names the journal.
    snapshotted = provider.snapshot_disks(dst_conn, ENV, volumes, "e1")["volumes_info"]
    journal = provider.deploy_target_resources(dst_conn, ENV, export_info,
                                               snapshotted)["disks"]["disk0"]["journal"]
    assert journal and journal.endswith(".coriolis-undo")

    key = "k" * 32
    agent_conn = {**dst_conn, "writer": {"url": "https://192.0.2.1:9443",
                                         "fingerprint": "ab" * 32, "key": key, "mode": "always"}}
    resources = provider.deploy_target_resources(agent_conn, ENV, export_info, volumes)
    agent = resources["disks"]["disk0"]
    assert agent["kind"] == "agent" and agent["key_ref"] == "writer.key"
    assert agent["mode"] == "always" and agent["path"] == volumes[0]["path"]
    assert key not in json.dumps(resources)
    provider.delete_target_resources(agent_conn, ENV, resources)
    provider.delete_target_resources(agent_conn, ENV, {})  # idempotent, also half-made

    Path(volumes[0]["path"]).unlink()
    with pytest.raises(exceptions.ProviderError, match="destination disk disk0 is missing"):
        provider.deploy_target_resources(dst_conn, ENV, export_info, volumes)
