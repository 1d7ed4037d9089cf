"""The writer agent as a real process on loopback, over TLS: bit-identical copies of raw, qcow2
and vmdk sources of odd sizes, checksums, tokens, certificate pinning, SIGKILL of either side
and resume, compression and the bandwidth limit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import urllib3

from coriolis.cmd.local_cloud import make_disk
from coriolis.harness import RunningWriter, processes_naming, start_writer, stop_server
from coriolis.transfer.copy import copy_disk
from coriolis.transfer.images import open_image_reader
from coriolis.transfer.nbd import QemuNbdExport
from coriolis.transfer.remote import AgentAddress, AgentError, RemoteDiskWriter

MiB = 1024 * 1024
ODD = 24 * MiB + 3 * 512  # a multiple of a sector, not of any chunk size


def address(agent: RunningWriter) -> AgentAddress:
    return AgentAddress.from_json(agent.details)


def blank(agent: RunningWriter, name: str, size: int, fmt: str = "raw") -> Path:
    path = agent.roots[0] / name
    if fmt == "raw":
        with open(path, "wb") as f:
            f.truncate(size)
    else:
        subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), str(size)], check=True)
    return path


def identical(a: Path, fa: str, b: Path, fb: str) -> bool:
    return subprocess.run(["qemu-img", "compare", "-q", "-f", fa, "-F", fb, str(a), str(b)]
                          ).returncode == 0


def send(agent: RunningWriter, src: Path, fmt: str, dst: Path, dst_fmt: str = "raw",
         transfer_id: str | None = None, **options):  # type: ignore[no-untyped-def]
    reader = open_image_reader(str(src), fmt)
    remote = RemoteDiskWriter(address(agent), transfer_id or uuid.uuid4().hex, str(dst),
                              dst_fmt, **options)
    try:
        stats = copy_disk(reader, remote)
    finally:
        reader.close()
        remote.close()
    return stats, remote


@pytest.mark.parametrize(("fmt", "dst_fmt"), [("raw", "raw"), ("qcow2", "raw"),
                                              ("vmdk", "qcow2")])
def test_copies_are_bit_identical(writer: RunningWriter, tmp_path: Path, fmt: str,
                                  dst_fmt: str) -> None:
    src = tmp_path / f"src.{fmt}"
    make_disk(src, ODD, fmt, allocated_fraction=0.4, seed=3)
    dst = blank(writer, f"dst.{dst_fmt}", ODD, dst_fmt)
    stats, remote = send(writer, src, fmt, dst, dst_fmt)
    assert identical(src, fmt, dst, dst_fmt)
    assert remote.stats.bytes_in == stats.bytes_written > 0
    # a finished transfer is forgotten by the agent
    assert not any((writer.data_dir / "transfers").iterdir())


def test_a_corrupted_chunk_is_refused_and_sent_again(writer: RunningWriter,
                                                     tmp_path: Path) -> None:
    src = tmp_path / "src.raw"
    make_disk(src, ODD, "raw", allocated_fraction=0.5, seed=4)
    dst = blank(writer, "dst.raw", ODD)
    reader = open_image_reader(str(src), "raw")
    remote = RemoteDiskWriter(address(writer), "flip", str(dst), "raw", compression="none")
    flips = {"left": 3}
    lock = threading.Lock()

    def flip_one_byte(body: bytes) -> bytes:  # a byte flipped after the checksum was taken
        with lock:
            if flips["left"] <= 0:
                return body
            flips["left"] -= 1
        return body[:100] + bytes([body[100] ^ 0x01]) + body[101:]

    remote.tamper = flip_one_byte
    copy_disk(reader, remote)
    reader.close()
    remote.close()
    assert remote.stats.chunks_resent == 3
    assert src.read_bytes() == dst.read_bytes()
    assert "failed its checksum" in writer.log_path.read_text()


def test_tokens_and_agent_key_are_required(writer: RunningWriter) -> None:
    dst = blank(writer, "dst.raw", MiB)
    good = address(writer)
    with pytest.raises(AgentError, match="401"):
        RemoteDiskWriter(AgentAddress(good.url, good.fingerprint, "wrong-key"), "t1",
                         str(dst), "raw")
    remote = RemoteDiskWriter(good, "t2", str(dst), "raw")
    remote._token = "forged"  # noqa: SLF001 - what a sender without the token would send
    with pytest.raises(AgentError, match="invalid transfer token"):
        remote.write(0, b"x" * 4096)
    assert dst.read_bytes() == bytes(MiB)
    with pytest.raises(AgentError, match="outside the directories"):
        RemoteDiskWriter(good, "t3", "/etc/passwd", "raw")


def test_a_wrong_certificate_is_refused_before_anything_is_sent(writer: RunningWriter) -> None:
    dst = blank(writer, "dst.raw", MiB)
    good = address(writer)
    impostor = AgentAddress(good.url, ":".join(["ab"] * 32), good.key)
    with pytest.raises(AgentError, match="fingerprint"):
        RemoteDiskWriter(impostor, "pinned", str(dst), "raw")
    assert not (writer.data_dir / "transfers" / "pinned").exists()


def test_killed_agent_restarts_and_the_copy_completes(writer: RunningWriter,
                                                      tmp_path: Path) -> None:
    src = tmp_path / "src.raw"
    make_disk(src, 64 * MiB, "raw", allocated_fraction=1.0, seed=5)
    dst = blank(writer, "dst.raw", 64 * MiB)
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["stats"], result["remote"] = send(
                writer, src, "raw", dst, compression="none", bandwidth_limit=40 * MiB)
        except Exception as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    sender = threading.Thread(target=run)
    sender.start()
    time.sleep(0.6)
    writer.process.send_signal(signal.SIGKILL)
    writer.process.wait()
    time.sleep(0.5)
    restarted = start_writer(writer.data_dir, writer.roots, port=writer.port)
    try:
        sender.join(timeout=120)
        assert "error" not in result, result.get("error")
        assert src.read_bytes() == dst.read_bytes()
    finally:
        stop_server(restarted)


SENDER = """
import json, sys
from coriolis.transfer.copy import copy_disk
from coriolis.transfer.images import open_image_reader
from coriolis.transfer.remote import AgentAddress, RemoteDiskWriter
details, src, dst, tid = sys.argv[1:]
remote = RemoteDiskWriter(AgentAddress.from_json(json.loads(details)), tid, dst, "raw",
                          compression="none", bandwidth_limit=32 * 2**20)
copy_disk(open_image_reader(src, "raw"), remote,
          progress=lambda done, total, rate: print(done, total, flush=True))
"""


def test_killed_sender_resumes_from_the_last_acknowledged_chunk(writer: RunningWriter,
                                                                tmp_path: Path) -> None:
    size = 64 * MiB + 512
    src = tmp_path / "src.raw"
    make_disk(src, size, "raw", allocated_fraction=1.0, seed=6)
    dst = blank(writer, "dst.raw", size)
    proc = subprocess.Popen([sys.executable, "-c", SENDER, json.dumps(writer.details),
                             str(src), str(dst), "resume-me"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # progress, at most once a second
        done, total = map(int, line.split())
        if done >= total // 4:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stats, remote = send(writer, src, "raw", dst, transfer_id="resume-me")
    assert src.read_bytes() == dst.read_bytes()
    assert stats.bytes_resumed >= size // 4  # not sent again
    assert remote.stats.bytes_in == stats.bytes_written <= size - stats.bytes_resumed


def text_and_random(path: Path, size: int) -> None:
    """Half text without runs of zeroes, half random bytes."""
    words = b" ".join(f"line {i}: the quick brown fox jumps over disk {i % 97}".encode()
                      for i in range(size // 40))
    with open(path, "wb") as f:
        f.write(words[: size // 2])
        f.write(os.urandom(size - size // 2))


def test_zstd_on_the_wire(writer: RunningWriter, tmp_path: Path) -> None:
    src = tmp_path / "src.raw"
    text_and_random(src, 16 * MiB)
    dst = blank(writer, "dst.raw", 16 * MiB)
    _, remote = send(writer, src, "raw", dst, compression="zstd")
    assert src.read_bytes() == dst.read_bytes()
    assert remote.stats.bytes_on_wire < 0.7 * remote.stats.bytes_in


def test_auto_compression_follows_the_link(writer: RunningWriter, tmp_path: Path) -> None:
    random_src = tmp_path / "random.raw"
    make_disk(random_src, 32 * MiB, "raw", allocated_fraction=1.0, seed=8)
    _, fast = send(writer, random_src, "raw", blank(writer, "a.raw", 32 * MiB))
    # random data never shrinks: only the sampled chunks were compressed, none sent so
    assert fast.stats.chunks_compressed == 0
    text = tmp_path / "text.raw"
    words = b" ".join(f"line {i}: the quick brown fox".encode() for i in range(2 * MiB))
    text.write_bytes(words[: 32 * MiB])
    _, slow = send(writer, text, "raw", blank(writer, "b.raw", 32 * MiB),
                   bandwidth_limit=16 * MiB)
    # over a 16 MiB/s link, text compresses faster than it can be sent
    assert slow.stats.chunks_compressed >= 6
    assert slow.stats.bytes_on_wire < slow.stats.bytes_in / 2


def test_bandwidth_limit(writer: RunningWriter, tmp_path: Path) -> None:
    src = tmp_path / "src.raw"
    make_disk(src, 16 * MiB, "raw", allocated_fraction=1.0, seed=9)
    began = time.monotonic()
    send(writer, src, "raw", blank(writer, "dst.raw", 16 * MiB), compression="none",
         bandwidth_limit=32 * MiB)
    assert time.monotonic() - began >= 0.45  # 16 MiB at 32 MiB/s, whatever the machine


def test_bad_requests_name_the_problem(writer: RunningWriter) -> None:
    pool = urllib3.PoolManager(cert_reqs="CERT_NONE", assert_hostname=False,
                               assert_fingerprint=writer.details["fingerprint"].replace(":", ""))
    url = f"{writer.details['url']}/v1/transfers/x1"
    response = pool.request("PUT", url, body=b'{"format": "raw"}',
                            headers={"X-Coriolis-Agent-Key": writer.details["key"]})
    assert response.status == 400
    assert "path" in json.loads(response.data)["detail"]
    response = pool.request("PUT", f"{writer.details['url']}/v1/transfers/BAD",
                            body=b'{"path": "/nowhere"}',
                            headers={"X-Coriolis-Agent-Key": writer.details["key"]})
    assert response.status == 400
    assert "transfer id" in json.loads(response.data)["detail"]


def test_a_disk_another_process_holds_is_refused_at_once_by_name(writer: RunningWriter,
                                                                 tmp_path: Path) -> None:
    """qemu-nbd cannot take the image's write lock: the agent answers with qemu-nbd's reason
    (it used to drop the connection, and the sender retried for two minutes), leaves no
    qemu-nbd behind, and the same transfer goes through once the disk is free."""
    src = tmp_path / "src.raw"
    text_and_random(src, 4 * MiB)
    dst = blank(writer, "held.qcow2", 4 * MiB, "qcow2")
    holder = QemuNbdExport(str(dst), "qcow2", readonly=False)
    transfer = uuid.uuid4().hex
    try:
        began = time.monotonic()
        with pytest.raises(AgentError) as refused:
            send(writer, src, "raw", dst, "qcow2", transfer_id=transfer)
        assert time.monotonic() - began < 30
        assert "held.qcow2" in str(refused.value) and "lock" in str(refused.value)
        assert len([c for c in processes_naming(str(dst)) if "qemu-nbd" in c]) == 1
    finally:
        holder.close()
    send(writer, src, "raw", dst, "qcow2", transfer_id=transfer)
    assert identical(src, "raw", dst, "qcow2")


def test_paths_out_of_the_agent_roots_are_refused(writer: RunningWriter, tmp_path: Path) -> None:
    """The disk and the journal must resolve under a --root: an outside path, a '..' and a
    symlink out are each a 400 that names the field; the outside file is untouched."""
    outside = tmp_path / "outside.raw"
    outside.write_bytes(bytes(MiB))
    link = writer.roots[0] / "link.raw"
    link.symlink_to(outside)
    dst = blank(writer, "inside.raw", MiB)
    for i, path in enumerate((str(outside), f"{writer.roots[0]}/../outside.raw", str(link))):
        with pytest.raises(AgentError, match="path .* is outside the directories"):
            RemoteDiskWriter(address(writer), f"out{i}", path, "raw")
    with pytest.raises(AgentError, match="journal .* is outside the directories"):
        RemoteDiskWriter(address(writer), "out-journal", str(dst), "raw",
                         journal=str(tmp_path / "undo"))
    assert outside.read_bytes() == bytes(MiB) and not (tmp_path / "undo").exists()
