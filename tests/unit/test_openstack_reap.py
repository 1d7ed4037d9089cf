"""A test OpenStack cloud whose starting process died (a test run killed before teardown) is
removed by the next start: its service processes killed, its directory gone; clouds of live
processes and directories without an owner file are left alone. Real processes stand in for
the services (anything whose command line names the cloud's directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from coriolis.leftovers import OWNER_FILE, process_token
from coriolis.openstack_cloud import reap_stale_clouds


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def service(procs: list[subprocess.Popen[bytes]], config: Path) -> subprocess.Popen[bytes]:
    """A process standing in for a service started with a configuration file in ``config``."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", str(config)])
    procs.append(proc)
    return proc


def cloud_dir(base: Path, name: str, owner: str | None) -> Path:
    work = base / f"coriolis-openstack-{name}"
    (work / "etc").mkdir(parents=True)
    if owner is not None:
        (work / OWNER_FILE).write_text(f"{owner}\n")
    return work


def test_a_cloud_whose_starter_died_is_reaped(
        tmp_path: Path, spawned: list[subprocess.Popen[bytes]]) -> None:
    starter = subprocess.Popen(["true"])
    starter.wait()
    stale = cloud_dir(tmp_path, "stale", f"{starter.pid} 12345")
    live = cloud_dir(tmp_path, "live", process_token(os.getpid()))
    legacy = cloud_dir(tmp_path, "legacy", None)
    stale_services = [service(spawned, stale / "etc" / f"{n}.conf") for n in ("nova", "cinder")]
    others = [service(spawned, d / "etc" / "nova.conf") for d in (live, legacy)]

    assert reap_stale_clouds(tmp_path) == [stale]

    assert [p.wait(timeout=10) for p in stale_services] == [-9, -9]
    assert not stale.exists()
    assert live.exists() and legacy.exists()
    assert all(p.poll() is None for p in others)


def test_a_reused_pid_does_not_keep_a_stale_cloud(tmp_path: Path) -> None:
    """The owner file names the process by pid and start time: another process that got the
    same pid later does not count as the starter."""
    token = process_token(os.getpid())
    assert token is not None
    pid, started = token.split()
    stale = cloud_dir(tmp_path, "reused", f"{pid} {int(started) - 1}")
    assert reap_stale_clouds(tmp_path) == [stale]
    assert not stale.exists()


def test_a_dead_readers_vmdk_mirror_is_unmounted_and_removed(
        tmp_path: Path, spawned: list[subprocess.Popen[bytes]]) -> None:
    """The same for the vSphere sparse reader's mirrors, with a real mount under the folder
    (a tmpfs standing in for nbdfuse's FUSE mount, which ``fusermount3 -u -z`` also
    unmounts)."""
    from coriolis.providers.vmware_vsphere.vmdk_chain import reap_stale_mirrors

    starter = subprocess.Popen(["true"])
    starter.wait()
    mirror = tmp_path / "coriolis-vmdk-dead"
    point = mirror / "mnt" / "0"
    point.mkdir(parents=True)
    (mirror / OWNER_FILE).write_text(f"{starter.pid} 1\n")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        reader = service(spawned, point / "disk-flat.vmdk")
        assert reap_stale_mirrors(tmp_path) == [mirror]
        assert reader.wait(timeout=10) == -9
        assert str(point) not in Path("/proc/mounts").read_text()
        assert not mirror.exists()
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)
