"""What the server keeps in its data directory is private: after a real server start (on a
data directory an older version left readable) and a migration, every file there is 0600 and
every folder 0700: the database and its -wal/-shm, logs, openrc, keys, the worker's manifests."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from coriolis.harness import local_cloud, start_server, stop_server


def modes(data_dir: Path) -> dict[str, str]:
    """Mode of everything under ``data_dir`` but the local clouds (users' data)."""
    found = {".": oct(stat.S_IMODE(data_dir.stat().st_mode))}
    for path in data_dir.rglob("*"):
        rel = path.relative_to(data_dir)
        if rel.parts[0] != "clouds" and not path.is_symlink():
            found[str(rel)] = oct(stat.S_IMODE(path.stat().st_mode))
    return found


def test_data_files_are_private_after_a_real_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    old_log = data_dir / "coriolis.log"
    old_log.write_text("a line an older version wrote\n")
    old_log.chmod(0o644)
    server = start_server(data_dir)
    try:
        src, dst = server.cloud_dir("src"), server.cloud_dir("dst")
        local_cloud("init", str(src), "--network", "lan")
        local_cloud("add-instance", str(src), "vm1", "--disk-size", "4M", "--network", "lan")
        local_cloud("init", str(dst), "--network", "lan")
        server.local_endpoint("src", src)
        server.local_endpoint("dst", dst)
        created = server.cli(
            "migration", "create", "--origin-endpoint", "src", "--destination-endpoint", "dst",
            "--instance", "vm1", "--source-environment", '{"snapshot": false}',
            "--destination-environment", '{"storage_backend": "default"}',
            "--network-map", '{"lan": "lan"}', "--skip-os-morphing", "-f", "json").json()
        done = server.wait_for(["migration", "show", created["id"]],
                               lambda m: m["status"] in ("COMPLETED", "ERROR"))
        assert done["status"] == "COMPLETED"
        running = modes(data_dir)
    finally:
        stop_server(server)
    for name in ("coriolis.db", "coriolis.db-wal", "coriolis.db-shm", "coriolis.log",
                 "openrc", "secret.keys", "token.key"):
        assert running.get(name) == "0o600", (name, running)
    assert any(name.endswith(".manifest") for name in running), running
    wrong = {name: mode for name, mode in {**running, **modes(data_dir)}.items()
             if mode != ("0o700" if (data_dir / name).is_dir() else "0o600")}
    assert wrong == {}


@pytest.mark.parametrize("file", ["coriolis.db", "coriolis.log"])
def test_files_an_older_version_left_readable_are_made_private(tmp_path: Path,
                                                               file: str) -> None:
    from coriolis.config import Settings

    data_dir = tmp_path / "data"
    (data_dir / "worker" / "manifests").mkdir(parents=True, mode=0o755)
    for path in (data_dir / file, data_dir / "worker" / "manifests" / "x.manifest"):
        path.write_bytes(b"")
        path.chmod(0o644)
    cloud = data_dir / "clouds" / "p1" / "c"
    cloud.mkdir(parents=True)
    cloud.chmod(0o755)
    umask = os.umask(0o022)  # make_data_dir sets the process's umask: keep this one's
    try:
        Settings(data_dir=data_dir).make_data_dir()
    finally:
        os.umask(umask)
    assert modes(data_dir) == {
        ".": "0o700", file: "0o600", "worker": "0o700",
        "worker/manifests": "0o700", "worker/manifests/x.manifest": "0o600"}
    assert stat.S_IMODE(cloud.stat().st_mode) == 0o755  # users' clouds are left alone
