"""The reader side of the agent (``agent`` source locations) against a real agent process on
loopback over TLS: every byte of raw, qcow2 and vmdk disks and only their allocated extents,
the changes since a qcow2 dirty bitmap, read-only sessions, confinement to the roots, the
key by reference (never in the location or an error), and a restarted agent."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
from pathlib import Path

import pytest
import urllib3

from coriolis import exceptions
from coriolis.cmd.local_cloud import make_disk
from coriolis.harness import RunningWriter, start_writer, stop_server
from coriolis.transfer.base import DiskReader, Extent
from coriolis.transfer.locations import AgentLocation, PathLocation, open_reader, to_json
from coriolis.transfer.wire import AGENT_KEY_HEADER
from tests.integration.transfer.test_locations import qcow2_with_bitmap, raw_bytes, read_all

MiB = 1024 * 1024
SIZE = 12 * MiB + 512


def extents_and_bytes(reader: DiskReader) -> tuple[list[Extent], bytes]:
    return list(reader.extents()), read_all(reader)


def location(agent: RunningWriter, path: Path, fmt: str = "raw") -> dict:
    return to_json(AgentLocation(agent.details["url"], agent.details["fingerprint"],
                                 "coriolis_source_minion.key", str(path), fmt,
                                 what="source disk d0 (through minion)"))


def conn(agent: RunningWriter) -> dict:
    return {"path": "/x", "coriolis_source_minion": {"key": agent.details["key"]}}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("fmt", ["raw", "qcow2", "vmdk"])
def test_an_agent_source_reads_every_byte_and_only_allocated_extents(
        writer: RunningWriter, fmt: str) -> None:
    disk = writer.roots[0] / f"d.{fmt}"
    make_disk(disk, SIZE, fmt, allocated_fraction=0.3, seed=7)
    before = digest(disk)
    loc = location(writer, disk, fmt)
    assert writer.details["key"] not in json.dumps(loc)
    reader = open_reader(loc, connection_info=conn(writer))
    try:
        extents, data = extents_and_bytes(reader)
    finally:
        reader.close()
    assert data == raw_bytes(disk, fmt)
    # The same extents as reading the disk here: the agent reports what is allocated.
    local = open_reader(PathLocation(str(disk), fmt))
    try:
        assert extents == list(local.extents())
    finally:
        local.close()
    allocated = sum(e.length for e in extents if not e.zero)
    assert 0 < allocated < SIZE * 0.6
    assert digest(disk) == before  # read-only
    log = writer.log_path.read_text()
    assert "/v1/reads/" in log and "opened read-only" in log
    assert writer.details["key"] not in log


def test_since_a_qcow2_bitmap_the_agent_lists_only_what_changed(writer: RunningWriter) -> None:
    disk = writer.roots[0] / "d.qcow2"
    qcow2_with_bitmap(disk)
    reader = open_reader(location(writer, disk, "qcow2"), since="b1",
                         connection_info=conn(writer))
    try:
        assert list(reader.extents("b1")) == [Extent(4 * MiB, 64 * 1024)]
        assert reader.read(4 * MiB, 64 * 1024) == b"b" * 64 * 1024
        assert [e for e in reader.extents() if not e.zero] == [
            Extent(0, MiB), Extent(4 * MiB, 64 * 1024)]
    finally:
        reader.close()


def test_refusals_name_the_disk_never_the_key(writer: RunningWriter, tmp_path: Path) -> None:
    inside = writer.roots[0] / "in.raw"
    make_disk(inside, MiB, "raw", allocated_fraction=1.0, seed=1)
    outside = tmp_path / "out.raw"
    make_disk(outside, MiB, "raw", allocated_fraction=1.0, seed=2)
    backed = writer.roots[0] / "backed.qcow2"  # its backing file is outside the roots
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                    str(outside), str(backed)], check=True)
    key = writer.details["key"]
    errors = []
    for loc, info in ((location(writer, outside), conn(writer)),
                      (location(writer, backed, "qcow2"), conn(writer)),
                      (location(writer, writer.roots[0] / "gone.raw"), conn(writer)),
                      (location(writer, inside), {"coriolis_source_minion": {}}),
                      (location(writer, inside),
                       {"coriolis_source_minion": {"key": "wrong"}})):
        with pytest.raises(exceptions.ProviderError,
                           match=r"source disk d0 \(through minion\)") as raised:
            open_reader(loc, connection_info=info).close()
        errors.append(str(raised.value))
    assert "outside the directories this agent serves" in errors[0]
    assert "leads out" in errors[1] and str(outside) in errors[1]
    assert "does not exist" in errors[2]
    assert "source endpoint's connection info has no agent key at " \
           "'coriolis_source_minion.key'" in errors[3]
    assert "(401)" in errors[4] and "agent key" in errors[4]
    assert not any(key in e for e in errors)


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_a_read_session_refuses_writes(writer: RunningWriter) -> None:
    disk = writer.roots[0] / "ro.raw"
    make_disk(disk, 2 * MiB, "raw", allocated_fraction=1.0, seed=3)
    before = digest(disk)
    pool = urllib3.PoolManager(cert_reqs="CERT_NONE", assert_hostname=False)
    url = f"{writer.details['url']}/v1/reads/s1"
    opened = pool.request("PUT", url, body=json.dumps({"path": str(disk)}).encode(),
                          headers={AGENT_KEY_HEADER: writer.details["key"]})
    assert opened.status == 200, opened.data
    auth = {"Authorization": f"Bearer {json.loads(opened.data)['token']}"}
    for method, path in (("PUT", "/data/0"), ("PUT", "/zero/0/512"), ("POST", "/flush")):
        response = pool.request(method, url + path, body=b"x" * 512, headers=auth)
        assert response.status == 405, (method, path, response.data)
        assert b"read-only" in response.data
    # The session's token opens no transfer of the same id.
    assert pool.request("PUT", f"{writer.details['url']}/v1/transfers/s1/data/0",
                        body=b"x" * 512, headers=auth).status in (401, 404)
    assert pool.request("GET", url + "/data/0/512", headers=auth).status == 200
    assert pool.request("DELETE", url, headers=auth).status == 204
    assert pool.request("GET", url + "/data/0/512", headers=auth).status == 404
    assert digest(disk) == before


def test_a_restarted_agent_gets_a_new_session(writer: RunningWriter, tmp_path: Path) -> None:
    disk = writer.roots[0] / "r.raw"
    make_disk(disk, 4 * MiB, "raw", allocated_fraction=1.0, seed=4)
    reader = open_reader(location(writer, disk), connection_info=conn(writer))
    restarted = None
    try:
        assert reader.read(0, MiB) == disk.read_bytes()[:MiB]
        writer.process.send_signal(signal.SIGKILL)
        writer.process.wait()
        restarted = start_writer(writer.data_dir, writer.roots, writer.port)
        assert reader.read(MiB, MiB) == disk.read_bytes()[MiB:2 * MiB]
    finally:
        reader.close()
        if restarted is not None:
            stop_server(restarted)
