"""The writer agent's TLS NBD path (``transfer.nbd_export`` and ``transfer.nbd_writer``) with a
real agent process and real qemu-nbd on loopback: bit-identical copies, the pre-shared key,
resume after a killed sender, the export gone after close, and when the HTTPS path is used."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from coriolis.cmd.local_cloud import make_disk
from coriolis.harness import RunningWriter, processes_naming
from coriolis.transfer.copy import copy_disk
from coriolis.transfer.images import open_image_reader
from coriolis.transfer.locations import AgentLocation, open_writer
from coriolis.transfer.nbd_uri import load_libnbd
from coriolis.transfer.nbd_writer import NbdAgentWriter, open_agent_writer
from coriolis.transfer.options import TransferOptions
from coriolis.transfer.remote import AgentAddress, AgentSession, RemoteDiskWriter

MiB = 1024 * 1024
ODD = 24 * MiB + 3 * 512


def address(agent: RunningWriter) -> AgentAddress:
    return AgentAddress.from_json(agent.details)


def blank(agent: RunningWriter, name: str, size: int, fmt: str = "raw") -> Path:
    path = agent.roots[0] / name
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), str(size)], check=True)
    return path


def identical(a: Path, fa: str, b: Path, fb: str) -> bool:
    return subprocess.run(["qemu-img", "compare", "-q", "-f", fa, "-F", fb, str(a), str(b)]
                          ).returncode == 0


def exports_of(path: Path) -> list[str]:
    return [c for c in processes_naming(str(path)) if c.startswith("qemu-nbd") and "tls" in c]


def key_folder(cmdline: str) -> Path:
    """The folder of qemu-nbd's key file, from its command line."""
    return Path(cmdline.split("dir=")[1].split(",")[0].split()[0])


def open_raw(agent: RunningWriter, tid: str, path: Path) -> dict[str, Any]:
    """The open reply of an NBD transfer, asked for as a worker does."""
    with AgentSession(address(agent)) as session:
        return dict(session.call("PUT", f"/v1/transfers/{tid}", "open a transfer",
                                 {"path": str(path), "export": "nbd"}))


@pytest.mark.parametrize(("fmt", "dst_fmt"), [("raw", "raw"), ("qcow2", "qcow2")])
def test_the_nbd_path_is_used_and_copies_bit_identically(writer: RunningWriter, tmp_path: Path,
                                                         fmt: str, dst_fmt: str) -> None:
    src = tmp_path / f"src.{fmt}"
    make_disk(src, ODD, fmt, allocated_fraction=0.4, seed=3)
    dst = blank(writer, f"dst.{dst_fmt}", ODD, dst_fmt)
    remote = open_agent_writer(address(writer), "nbd-copy", str(dst), dst_fmt,
                               transport="nbd", compression="auto")
    assert isinstance(remote, NbdAgentWriter)
    [cmdline] = exports_of(dst)
    assert (key_folder(cmdline) / "keys.psk").exists()
    reader = open_image_reader(str(src), fmt)
    try:
        stats = copy_disk(reader, remote)
    finally:
        reader.close()
        remote.close()
    assert identical(src, fmt, dst, dst_fmt)
    assert remote.stats.bytes_in == stats.bytes_written > 0
    assert "over NBD with TLS" in remote.wire_summary()
    # closed: no qemu-nbd left, no key file, the transfer forgotten
    assert exports_of(dst) == []
    assert not key_folder(cmdline).exists()
    assert not any((writer.data_dir / "transfers").iterdir())


def test_the_export_needs_its_key(writer: RunningWriter) -> None:
    dst = blank(writer, "dst.raw", MiB)
    opened = open_raw(writer, "keyed", dst)
    export = opened["nbd"]
    nbd = load_libnbd()
    [cmdline] = exports_of(dst)
    assert export["psk"] not in cmdline  # never on a command line
    folder = key_folder(cmdline)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(folder / "keys.psk").st_mode) == 0o600

    def connect(tmp: Path, tls: bool, key: str) -> Any:
        h = nbd.NBD()
        h.set_export_name(export["export"])
        if tls:
            psk = tmp / "keys.psk"
            psk.write_text(f"{export['identity']}:{key}\n")
            h.set_tls(nbd.TLS_REQUIRE)
            h.set_tls_psk_file(str(psk))
            h.set_tls_username(export["identity"])
        h.connect_tcp("127.0.0.1", str(export["port"]))
        return h

    tmp = writer.data_dir.parent
    with pytest.raises(nbd.Error):
        connect(tmp, tls=False, key="")
    with pytest.raises(nbd.Error):
        connect(tmp, tls=True, key="00" * 32)
    good = connect(tmp, tls=True, key=export["psk"])
    assert good.get_size() == MiB
    good.shutdown()
    # a re-open (a sender presumed dead) replaces the export and its key
    again = open_raw(writer, "keyed", dst)["nbd"]
    assert again["psk"] != export["psk"]
    with pytest.raises(nbd.Error):
        connect(tmp, tls=True, key=export["psk"])
    assert len(exports_of(dst)) == 1


SENDER = """
import json, sys
from coriolis.transfer.copy import copy_disk
from coriolis.transfer.images import open_image_reader
from coriolis.transfer.locations import AgentLocation, open_writer
from coriolis.transfer.nbd_writer import open_agent_writer
from coriolis.transfer.remote import AgentAddress
details, src, dst, tid = sys.argv[1:]
remote = open_agent_writer(AgentAddress.from_json(json.loads(details)), tid, dst, "raw",
                           transport="nbd", strict=True, connections=1)
print("nbd", flush=True)
copy_disk(open_image_reader(src, "raw"), remote, workers=1, chunk_size=1 << 20,
          progress=lambda done, total, rate: print(done, total, flush=True))
"""


def acknowledged(agent: RunningWriter, tid: str) -> int:
    blob = (agent.data_dir / "transfers" / tid / "acks").read_bytes()
    usable = len(blob) - len(blob) % 16
    return sum(int.from_bytes(blob[i + 8:i + 16]) - int.from_bytes(blob[i:i + 8])
               for i in range(0, usable, 16))


def test_a_killed_sender_resumes_skipping_only_acknowledged_chunks(writer: RunningWriter,
                                                                   tmp_path: Path) -> None:
    size = 48 * MiB + 512
    src = tmp_path / "src.raw"
    make_disk(src, size, "raw", allocated_fraction=1.0, seed=6)
    dst = blank(writer, "dst.raw", size)
    proc = subprocess.Popen([sys.executable, "-c", SENDER, json.dumps(writer.details),
                             str(src), str(dst), "resume-nbd"], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "nbd"
    for line in proc.stdout:
        done, total = map(int, line.split())
        if done >= total // 4:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    durable = acknowledged(writer, "resume-nbd")
    assert durable >= size // 4 - 4 * MiB  # the last flushed ranges may not be logged yet
    reader = open_image_reader(str(src), "raw")
    remote = open_agent_writer(address(writer), "resume-nbd", str(dst), "raw",
                               transport="nbd", strict=True)
    assert remote.durable_ranges().total() == durable  # type: ignore[attr-defined]
    try:
        stats = copy_disk(reader, remote)
    finally:
        reader.close()
        remote.close()
    assert src.read_bytes() == dst.read_bytes()
    assert 0 < stats.bytes_resumed <= durable  # only what was acknowledged is skipped
    assert stats.bytes_written == size - stats.bytes_resumed
    assert exports_of(dst) == []


def test_a_failed_copy_stops_the_export_and_keeps_the_transfer(writer: RunningWriter) -> None:
    dst = blank(writer, "dst.raw", 8 * MiB)
    remote = open_agent_writer(address(writer), "failed", str(dst), "raw", transport="nbd",
                               strict=True)
    remote.write(0, b"\x01" * MiB)
    remote.close()  # no final flush: a failed copy
    assert exports_of(dst) == []
    assert (writer.data_dir / "transfers" / "failed" / "acks").exists()
    assert acknowledged(writer, "failed") == MiB


@pytest.mark.parametrize("options", [{"journal": "j"}, {"compression": "zstd"},
                                     {"bandwidth_limit": 10 * MiB}, {"transport": "https"}])
def test_the_https_path_where_nbd_cannot_be_used(writer: RunningWriter,
                                                 options: dict[str, Any]) -> None:
    dst = blank(writer, "dst.raw", MiB)
    if "journal" in options:
        options["journal"] = str(writer.roots[0] / "dst.journal")
    remote = open_agent_writer(address(writer), "https", str(dst), "raw",
                               **{"transport": "nbd", **options})
    try:
        assert isinstance(remote, RemoteDiskWriter)
        assert exports_of(dst) == []
    finally:
        remote.close()


@pytest.mark.parametrize(("transport", "kind"), [("nbd", NbdAgentWriter),
                                                 ("https", RemoteDiskWriter)])
def test_the_transfer_option_chooses_the_path(writer: RunningWriter, transport: str,
                                              kind: type) -> None:
    dst = blank(writer, "dst.raw", MiB)
    details = writer.details
    location = AgentLocation(details["url"], details["fingerprint"], "writer.key", str(dst),
                             mode="always")
    options = TransferOptions.from_env({"writer_agent_transport": transport})
    opened = open_writer(location, options=options, transfer_id=f"option-{transport}",
                         connection_info={"writer": {"key": details["key"]}})
    try:
        assert isinstance(opened, kind)
    finally:
        opened.close()
