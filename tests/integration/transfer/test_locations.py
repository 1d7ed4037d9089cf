"""Opening every kind of location (``transfer.locations``) on real things: files and qcow2
images (qemu-nbd), a real qemu-nbd export over a unix socket and TCP loopback (with a qcow2
dirty bitmap, ``qemu-nbd -B``), a real HTTP(S) server with Range support (a small
``ThreadingHTTPServer`` handler in this module: nginx is not installed here), a real writer
agent process; confinement refusals, missing and too-small targets."""

from __future__ import annotations

import http.server
import os
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coriolis import exceptions
from coriolis.cmd.local_cloud import make_disk
from coriolis.harness import RunningWriter
from coriolis.transfer.base import DiskReader, Extent
from coriolis.transfer.copy import copy_disk
from coriolis.transfer.files import RawFileWriter
from coriolis.transfer.journal import roll_back
from coriolis.transfer.locations import (
    AgentLocation,
    HttpLocation,
    NbdLocation,
    PathLocation,
    PlatformLocation,
    open_reader,
    open_writer,
    to_json,
    writes_through_agent,
)
from coriolis.transfer.options import TransferOptions
from coriolis.transfer.tls import ensure_certificate

MiB = 1024 * 1024
OPTIONS = TransferOptions()


def raw_bytes(path: Path, fmt: str) -> bytes:
    if fmt == "raw":
        return path.read_bytes()
    out = path.with_name(path.name + ".as-raw")
    subprocess.run(["qemu-img", "convert", "-q", "-f", fmt, "-O", "raw", str(path), str(out)],
                   check=True)
    data = out.read_bytes()
    out.unlink()
    return data


def read_all(reader: DiskReader) -> bytes:
    """The disk as the reader's extents describe it; they must cover it in order."""
    out = bytearray()
    for ext in reader.extents():
        assert ext.offset == len(out), (ext, len(out))
        out += bytes(ext.length) if ext.zero else reader.read(ext.offset, ext.length)
    assert len(out) == reader.size
    return bytes(out)


def qcow2_with_bitmap(path: Path) -> None:
    """8 MiB: data at 0 (before the bitmap ``b1``), then 64 KiB at 4 MiB (after it)."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "8M"], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x61 0 1M", str(path)], check=True,
                   capture_output=True)
    subprocess.run(["qemu-img", "bitmap", "--add", str(path), "b1"], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x62 4M 64k", str(path)], check=True,
                   capture_output=True)


@pytest.mark.parametrize("fmt", ["raw", "qcow2", "vmdk"])
def test_a_path_location_reads_every_byte(tmp_path: Path, fmt: str) -> None:
    disk = tmp_path / f"d.{fmt}"
    make_disk(disk, 12 * MiB + 512, fmt, allocated_fraction=0.4, seed=3)
    location = to_json(PathLocation(str(disk), fmt, confine=(str(tmp_path),), what="disk d"))
    reader = open_reader(location)
    try:
        assert read_all(reader) == raw_bytes(disk, fmt)
    finally:
        reader.close()


def test_since_a_qcow2_bitmap_reads_only_what_changed(tmp_path: Path) -> None:
    disk = tmp_path / "d.qcow2"
    qcow2_with_bitmap(disk)
    reader = open_reader(PathLocation(str(disk), "qcow2"), since="b1")
    try:
        assert list(reader.extents("b1")) == [Extent(4 * MiB, 64 * 1024)]
    finally:
        reader.close()
    reader = open_reader(PathLocation(str(disk), "qcow2"), since="not-a-bitmap")
    try:  # a token the image lacks: every allocated range
        assert [e for e in reader.extents("not-a-bitmap") if not e.zero] == [
            Extent(0, MiB), Extent(4 * MiB, 64 * 1024)]
    finally:
        reader.close()


def test_confine_refuses_what_leads_out(tmp_path: Path) -> None:
    """A raw disk that is a symlink out, a folder on the way that leads out, a qcow2 whose
    backing file is outside: each an ``InvalidInput`` naming the disk (reader and writer)."""
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    secret = outside / "secret.raw"
    secret.write_bytes(b"s" * 65536)
    (inside / "link.raw").symlink_to(secret)
    (inside / "sub").symlink_to(outside)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(secret), "-F", "raw",
                    str(inside / "overlay.qcow2")], check=True)
    confine = (str(inside),)
    cases = [(inside / "link.raw", "raw", "cannot be opened"),
             (inside / "sub" / "secret.raw", "raw", f"leads out .*{secret}"),
             (inside / "overlay.qcow2", "qcow2", f"leads out .*{secret}")]
    for path, fmt, message in cases:
        location = PathLocation(str(path), fmt, confine=confine, what="disk x")
        with pytest.raises(exceptions.InvalidInput, match=f"disk x {message}"):
            open_reader(location)
        with pytest.raises(exceptions.InvalidInput, match=f"disk x {message}"):
            open_writer(location, options=OPTIONS, transfer_id="t", connection_info={})
    assert secret.read_bytes() == b"s" * 65536
    # Without confine the same files open (what confine refuses is the only difference).
    open_reader(PathLocation(str(inside / "overlay.qcow2"), "qcow2")).close()


def test_path_writer_zeroes_journals_and_checks_the_target(tmp_path: Path) -> None:
    target = tmp_path / "t.raw"
    target.write_bytes(b"o" * MiB)
    journal = tmp_path / "t.journal"
    writer = open_writer(to_json(PathLocation(str(target), "raw", what="destination disk d0",
                                              journal=str(journal))),
                         options=OPTIONS, transfer_id="t", connection_info={}, size=MiB)
    writer.write(0, b"n" * 4096)
    writer.zero(8192, 4096)
    writer.flush()
    writer.close()
    data = target.read_bytes()
    assert data[:4096] == b"n" * 4096 and data[8192:12288] == bytes(4096)
    roll_back(journal, RawFileWriter(str(target)))
    assert target.read_bytes() == b"o" * MiB

    with pytest.raises(exceptions.ProviderError,
                       match=r"destination disk d0 is smaller \(1048576 bytes\) than the "
                             r"volume \(2097152 bytes\)"):
        open_writer(PathLocation(str(target), "raw", what="destination disk d0"),
                    options=OPTIONS, transfer_id="t", connection_info={}, size=2 * MiB)
    small = tmp_path / "small.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(small), "1M"], check=True)
    with pytest.raises(exceptions.ProviderError, match="destination disk d1 is smaller"):
        open_writer(PathLocation(str(small), "qcow2", what="destination disk d1"),
                    options=OPTIONS, transfer_id="t", connection_info={}, size=2 * MiB)
    for fmt in ("raw", "qcow2"):
        with pytest.raises(exceptions.ProviderError, match="destination disk d2 is missing"):
            open_writer(PathLocation(str(tmp_path / f"gone.{fmt}"), fmt,
                                     what="destination disk d2"),
                        options=OPTIONS, transfer_id="t", connection_info={})
        with pytest.raises(exceptions.ProviderError, match="disk file gone is missing"):
            open_reader(PathLocation(str(tmp_path / f"gone.{fmt}"), fmt,
                                     what="disk file gone"))


# --- nbd ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def nbd_export(tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    """A qcow2 image with bitmap ``b1`` served read-only by qemu-nbd twice: on a unix socket
    and on TCP loopback; yields the image and both URIs."""
    disk = tmp_path / "d.qcow2"
    qcow2_with_bitmap(disk)
    sock, port = tmp_path / "nbd.sock", free_port()
    procs = [subprocess.Popen(["qemu-nbd", "-r", "-t", "-f", "qcow2", "--shared=4", "-B", "b1",
                               *where, "-x", "exp", str(disk)])
             for where in (["--socket", str(sock)], ["-b", "127.0.0.1", "-p", str(port)])]
    deadline = time.monotonic() + 20
    while not sock.exists() or _refused(port):
        assert time.monotonic() < deadline, "qemu-nbd did not start"
        time.sleep(0.05)
    try:
        yield disk, f"nbd+unix:///exp?socket={sock}", f"nbd://127.0.0.1:{port}/exp"
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        return False
    except OSError:
        return True


def test_an_nbd_location_reads_every_byte_and_the_dirty_bitmap(
        nbd_export: tuple[Path, str, str]) -> None:
    disk, unix_uri, tcp_uri = nbd_export
    expected = raw_bytes(disk, "qcow2")
    for uri in (unix_uri, tcp_uri):
        reader = open_reader(to_json(NbdLocation(uri, dirty_bitmap="b1")))
        try:
            assert read_all(reader) == expected
            assert [e for e in reader.extents() if not e.zero] == [
                Extent(0, MiB), Extent(4 * MiB, 64 * 1024)]
            assert list(reader.extents(since="b1")) == [Extent(4 * MiB, 64 * 1024)]
        finally:
            reader.close()
    with pytest.raises(exceptions.ProviderError, match="has no dirty bitmap 'b2'"):
        open_reader(NbdLocation(tcp_uri, dirty_bitmap="b2"))


def test_an_unreachable_nbd_export_is_named() -> None:
    uri = f"nbd://127.0.0.1:{free_port()}/x"
    with pytest.raises(exceptions.ProviderError, match=re.escape(f"NBD export {uri}")):
        open_reader(NbdLocation(uri))


# --- http -----------------------------------------------------------------------------------
class RangeHandler(http.server.BaseHTTPRequestHandler):
    """GET of one file with single ``Range: bytes=a-b`` requests (206), else the whole
    file (200); ``ranges = False`` on the server ignores Range."""

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        data: bytes = self.server.data  # type: ignore[attr-defined]
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        if match and self.server.ranges:  # type: ignore[attr-defined]
            start, end = int(match[1]), min(int(match[2]), len(data) - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            body = data[start:end + 1]
        else:
            self.send_response(200)
            body = data
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[http.server.ThreadingHTTPServer, bytes]]:
    data = os.urandom(3 * MiB + 1000)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    server.data, server.ranges = data, True  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, data
    finally:
        server.shutdown()
        server.server_close()


def test_an_http_location_reads_every_byte(
        http_server: tuple[http.server.ThreadingHTTPServer, bytes]) -> None:
    server, data = http_server
    url = f"http://127.0.0.1:{server.server_address[1]}/disk.raw?sig=x"
    reader = open_reader(to_json(HttpLocation(url, len(data))))
    try:
        assert list(reader.extents()) == [Extent(0, len(data))]
        copied = bytearray()
        for offset in range(0, len(data), MiB):  # as the copy reads: chunks at offsets
            copied += reader.read(offset, min(MiB, len(data) - offset))
        assert bytes(copied) == data
        server.ranges = False  # type: ignore[attr-defined]
        with pytest.raises(exceptions.ProviderError,
                           match=r"/disk.raw did not answer a range request .*HTTP 200"):
            reader.read(0, 10)
    finally:
        reader.close()


def test_an_https_location_pins_the_certificate(
        tmp_path: Path, http_server: tuple[http.server.ThreadingHTTPServer, bytes]) -> None:
    server, data = http_server
    cert = ensure_certificate(tmp_path / "tls", ["127.0.0.1"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert_file, cert.key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    url = f"https://127.0.0.1:{server.server_address[1]}/disk.raw"
    reader = open_reader(HttpLocation(url, len(data), fingerprint=cert.fingerprint))
    try:
        assert reader.read(MiB, 4096) == data[MiB:MiB + 4096]
    finally:
        reader.close()
    wrong = HttpLocation(url, len(data), fingerprint="ab" * 32)
    reader = open_reader(wrong)
    try:
        with pytest.raises(exceptions.ProviderError, match="pinned fingerprint"):
            reader.read(0, 10)
    finally:
        reader.close()


# --- platform -------------------------------------------------------------------------------
def test_a_platform_location_is_opened_by_its_provider(tmp_path: Path) -> None:
    disk = tmp_path / "d.raw"
    disk.write_bytes(b"p" * 4096)
    seen = []

    def opener(location: PlatformLocation, connection_info: dict) -> DiskReader:
        seen.append((location, connection_info))
        return open_reader(PathLocation(location.params["file"]))

    value = {"kind": "platform", "platform": "demo", "file": str(disk)}
    reader = open_reader(value, connection_info={"host": "h"}, platform_opener=opener)
    assert reader.read(0, 4) == b"pppp"
    reader.close()
    assert seen == [(PlatformLocation("demo", {"file": str(disk)}), {"host": "h"})]
    with pytest.raises(exceptions.ProviderError, match="'demo' platform location"):
        open_reader(value)


# --- agent ----------------------------------------------------------------------------------
@pytest.fixture
def agent(writer: RunningWriter) -> RunningWriter:
    """The conftest's writer agent (serving ``tmp_path / "root"``)."""
    return writer


def test_an_agent_location_writes_through_the_agent_with_the_key_it_refers_to(
        tmp_path: Path, agent: RunningWriter) -> None:
    source = tmp_path / "src.raw"
    make_disk(source, 6 * MiB, "raw", allocated_fraction=0.5, seed=5)
    target = agent.roots[0] / "dst.raw"
    with open(target, "wb") as f:
        f.truncate(6 * MiB)
    key = agent.details["key"]
    conn = {"path": "/x", "writer": {**agent.details}}
    location = to_json(AgentLocation(agent.details["url"], agent.details["fingerprint"],
                                     "writer.key", str(target), mode="always",
                                     what="destination disk d0"))
    assert key not in str(location)
    assert writes_through_agent(location, OPTIONS) == agent.details["url"]
    reader = open_reader(PathLocation(str(source)))
    writer = open_writer(location, options=TransferOptions(compression="zstd"),
                         transfer_id="t1", connection_info=conn, size=6 * MiB)
    assert "MiB on the wire" in writer.wire_summary()  # type: ignore[attr-defined]
    copy_disk(reader, writer)
    writer.close()
    reader.close()
    assert target.read_bytes() == source.read_bytes()

    errors = []
    for conn_info, loc, size in (
            ({"writer": {}}, location, None),  # no key where key_ref points
            (conn, {**location, "path": str(agent.roots[0] / "gone.raw")}, None),
            (conn, location, 7 * MiB)):  # too small
        with pytest.raises(exceptions.ProviderError, match="destination disk d0") as info:
            open_writer(loc, options=OPTIONS, transfer_id="t2", connection_info=conn_info,
                        size=size)
        errors.append(str(info.value))
    assert "no agent key at 'writer.key'" in errors[0]
    assert "does not exist" in errors[1] and "smaller" in errors[2]
    assert not any(key in e for e in errors)


def test_an_agent_on_this_host_is_bypassed_unless_asked(agent: RunningWriter) -> None:
    """``mode`` auto and the option ``writer_agent`` auto: an agent on this host is not
    used, the path is written directly (no key needed); either set to always: it is."""
    target = agent.roots[0] / "dst.raw"
    target.write_bytes(bytes(MiB))
    location = AgentLocation(agent.details["url"], agent.details["fingerprint"], "writer.key",
                             str(target), what="destination disk d0")
    assert writes_through_agent(location, OPTIONS) is None
    writer = open_writer(location, options=OPTIONS, transfer_id="t", connection_info={})
    assert not hasattr(writer, "wire_summary")
    writer.write(0, b"d" * 512)
    writer.close()
    assert target.read_bytes()[:512] == b"d" * 512
    always = TransferOptions(writer_agent="always")
    assert writes_through_agent(location, always) == agent.details["url"]
    with pytest.raises(exceptions.ProviderError, match="no agent key"):
        open_writer(location, options=always, transfer_id="t", connection_info={})
