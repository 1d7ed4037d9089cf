"""Where local clouds may be (Settings.local_roots) and what a worker refuses at task time:
real files, real qemu-img images, the real provider and worker (the event sink records)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from coriolis import constants as c
from coriolis import exceptions
from coriolis.bus.base import EndpointRef, TaskMessage
from coriolis.cmd.local_cloud import add_instance, init_cloud
from coriolis.config import ConfigError, Settings
from coriolis.providers.local.cloud import LocalCloud
from coriolis.providers.local.provider import LocalProvider
from coriolis.providers.local.source_snapshot import snapshot_image
from coriolis.transfer.confine import ConfinedRawReader, check_opened
from coriolis.transfer.nbd import NbdImageReader
from coriolis.worker.service import Worker


def test_default_root_is_under_the_data_dir_per_project(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    roots = settings.local_roots_for("p1")
    assert roots == [(tmp_path / "data" / "clouds" / "p1").resolve()]
    assert roots[0].is_dir() and oct(roots[0].stat().st_mode & 0o777) == "0o700"
    with pytest.raises(ValueError):
        settings.local_roots_for("../p1")


def test_roots_from_the_configuration_file_and_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "coriolis.conf"
    conf.write_text(f"[local]\nroot = {tmp_path}/a/{{project_id}}\n  {tmp_path}/shared\n")
    monkeypatch.delenv("CORIOLIS_LOCAL_ROOT", raising=False)
    settings = Settings(data_dir=tmp_path / "d", config_file=conf)
    assert settings.local_roots_for("p2") == [tmp_path / "a" / "p2", tmp_path / "shared"]
    monkeypatch.setenv("CORIOLIS_LOCAL_ROOT", f"{tmp_path}/e/{{project_id}}:{tmp_path}/f")
    settings = Settings(data_dir=tmp_path / "d", config_file=conf)
    assert settings.local_roots_for("p2") == [tmp_path / "e" / "p2", tmp_path / "f"]
    for bad, word in (("relative/{project_id}", "absolute"), ("/x/{user_id}", "project_id")):
        monkeypatch.setenv("CORIOLIS_LOCAL_ROOT", bad)
        with pytest.raises(ConfigError, match=word):
            Settings(data_dir=tmp_path / "d")


class Recorder:
    """The conductor's side of a task (TaskEventSink): records what the worker reports."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda task_id, *args, **kwargs: self.events.append((name, args))


def test_a_task_whose_endpoint_leads_out_of_the_project_root_fails_naming_it(
        tmp_path: Path) -> None:
    """The worker checks both endpoints again before a task runs (a path stored earlier, or a
    symlink changed since): the task fails with the reason and its runner never starts."""
    settings = Settings(data_dir=tmp_path / "data")
    root = settings.local_roots_for("p1")[0]
    inside, outside = init_cloud(root / "dst"), init_cloud(tmp_path / "elsewhere")
    link = root / "src"
    link.symlink_to(outside)
    worker = Worker("h", tmp_path / "data" / "worker", settings)
    message = TaskMessage(
        task_id="t1", execution_id="e1", task_type=c.TASK_TYPE_GET_INSTANCE_INFO,
        instance="vm1", task_info={},
        origin=EndpointRef("local", {"path": str(link)}, project_id="p1"),
        destination=EndpointRef("local", {"path": str(inside)}, project_id="p1"))
    sink = Recorder()
    worker.run_task(message, sink, threading.Event())  # type: ignore[arg-type]
    # (the start event every task sends first is not what this test is about)
    (kind, args), = [e for e in sink.events if e[0] not in ("task_started", "task_event")]
    assert kind == "task_failed" and "connection_info.path" in args[0] and str(root) in args[0]
    no_project = EndpointRef("local", {"path": str(inside)})
    with pytest.raises(exceptions.LocationNotAllowed, match="no project"):
        worker.call("list_instances", no_project)
    assert worker.call("list_instances", EndpointRef("local", {"path": str(inside)},
                                                     project_id="p1")) == []


def test_a_disk_corrupted_after_validation_fails_the_read_with_qemu_img_s_reason(
        tmp_path: Path) -> None:
    cloud = init_cloud(tmp_path / "c")
    add_instance(cloud, "vm1", disk_size="16M", disk_format="qcow2", allocated_fraction=0.5,
                 seed=1)
    provider, conn = LocalProvider(), {"path": str(cloud)}
    export_info = provider.get_instance(conn, {}, "vm1")
    disk = cloud / "instances" / "vm1" / "disk0.qcow2"
    os.truncate(disk, disk.stat().st_size // 2)
    with pytest.raises(exceptions.InvalidInput,
                       match=r"instance 'vm1': disk file disk0.qcow2 .*corrupted clusters"):
        provider.deploy_source_resources(conn, {}, export_info)


def test_a_qcow2_chain_inside_the_instance_folder_is_accepted(tmp_path: Path) -> None:
    """An overlay whose backing file is beside it (``-b base.qcow2``) is the instance's own."""
    cloud = init_cloud(tmp_path / "c")
    folder = add_instance(cloud, "vm1", disk_size="4M", disk_format="qcow2", seed=1)
    os.rename(folder / "disk0.qcow2", folder / "base.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F",
                    "qcow2", str(folder / "disk0.qcow2")], check=True)
    info = LocalProvider().get_instance({"path": str(cloud)}, {}, "vm1")
    assert info["devices"]["disks"][0]["size_bytes"] == 4 * 1024 * 1024
    desc = json.loads((folder / "instance.json").read_text())
    assert desc["disks"][0]["file"] == "disk0.qcow2"


def test_what_the_reader_opened_is_checked_not_only_the_name(tmp_path: Path) -> None:
    """The check a task makes by name is done again on what was opened: a raw disk through a
    descriptor (no last symlink followed, the kernel's path for it checked), a qcow2 through
    the files qemu-nbd holds open; so a folder swapped for a symlink after the name check
    still reads nothing outside."""
    cloud = init_cloud(tmp_path / "c")
    folder = add_instance(cloud, "vm1", disk_size="4M", seed=1)
    bases = LocalCloud({"path": str(cloud)}).read_bases("vm1")
    secret = tmp_path / "secret.raw"
    secret.write_bytes(b"s" * 4096)
    reader = ConfinedRawReader(str(folder / "disk0.raw"), bases, "disk0")
    assert reader.size == 4 * 1024 * 1024
    reader.close()
    (folder / "link.raw").symlink_to(secret)
    with pytest.raises(exceptions.InvalidInput, match="disk0 cannot be opened"):
        ConfinedRawReader(str(folder / "link.raw"), bases, "disk0")
    (folder / "sub").symlink_to(tmp_path)  # a folder on the way that leads out
    with pytest.raises(exceptions.InvalidInput, match=f"leads out .*{secret}"):
        ConfinedRawReader(str(folder / "sub" / "secret.raw"), bases, "disk0")

    overlay = folder / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(secret), "-F", "raw",
                    str(overlay)], check=True)
    nbd = NbdImageReader(str(overlay), "qcow2")
    try:
        assert str(secret) in nbd.open_files()
        with pytest.raises(exceptions.InvalidInput, match=f"leads out .*{secret}"):
            check_opened(nbd.open_files(), bases, "overlay")
    finally:
        nbd.close()


def test_the_source_snapshot_copies_what_it_opened_not_only_the_name(tmp_path: Path) -> None:
    """The ``"snapshot": true`` copy opens each file of the disk itself (no last symlink
    followed, the kernel's path for it checked) and copies that descriptor: a folder on the
    way that leads out copies nothing from outside."""
    cloud = init_cloud(tmp_path / "c")
    folder = add_instance(cloud, "vm1", disk_size="4M", seed=1)
    bases = LocalCloud({"path": str(cloud)}).read_bases("vm1")
    scratch = Path(os.path.realpath(cloud)) / ".coriolis"
    top = snapshot_image(folder / "disk0.raw", "raw", scratch / "ok", bases)
    assert top.read_bytes() == (folder / "disk0.raw").read_bytes()
    secret = tmp_path / "secret.raw"
    secret.write_bytes(b"s" * 4096)
    (folder / "sub").symlink_to(tmp_path)  # swapped in after the name was checked
    with pytest.raises(exceptions.InvalidInput, match=f"leads out .*{secret}"):
        snapshot_image(folder / "sub" / "secret.raw", "raw", scratch / "out", bases)
    assert not list((scratch / "out").rglob("*.raw"))
    (folder / "link.raw").symlink_to(secret)
    with pytest.raises(exceptions.InvalidInput, match="cannot be opened"):
        snapshot_image(folder / "link.raw", "raw", scratch / "link", bases)


def test_a_destination_cloud_whose_folders_lead_out_is_refused(tmp_path: Path) -> None:
    """Nothing is written out of a destination cloud through a symlinked ``instances``,
    storage backend or scratch folder, nor read from a symlinked cloud.json."""
    outside = tmp_path / "outside"
    outside.mkdir()
    provider = LocalProvider()
    for link, call, word in (
            ("instances", lambda cloud: cloud.instance_dir("vm1"), "folder leads out"),
            ("storage", lambda cloud: cloud.storage_dir("default"), "leads out"),
            (".coriolis", lambda cloud: cloud.scratch_dir(), "leads out"),
            ("cloud.json", lambda cloud: provider.list_networks({"path": str(cloud.root)}, {}),
             "leads out")):
        root = init_cloud(tmp_path / f"c-{link}")
        target = root / link
        if target.is_dir():
            target.rmdir()
        elif target.exists():
            os.replace(target, outside / "cloud.json")
        target.symlink_to(outside / ("cloud.json" if link == "cloud.json" else ""))
        with pytest.raises(exceptions.InvalidInput, match=word):
            call(LocalCloud({"path": str(root)}))
    assert [p.name for p in outside.iterdir()] == ["cloud.json"]
