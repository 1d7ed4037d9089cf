"""A real libvirt host for tests: the system libvirtd (qemu:///system), started here when it
is not running (no systemd on these machines: ``virtlogd -d``, ``virtlockd -d``, ``libvirtd
-d``), and a ``LibvirtHost`` per test that makes storage pools, networks and domains under a
prefix of its own, and removes all of them at the end.

qemu runs as ``libvirt-qemu``, so every folder on the way to an image must be o+x
(``open_path``); guests run under TCG (``<domain type='qemu'>``), which boots small guests
faster than nested KVM here (../shared/reference/platform-backends.md).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest

from coriolis.providers.libvirt.connection import load_libvirt
from coriolis.providers.libvirt.sockets import SOCKET_ROOT

URI = "qemu:///system"
SOCKET = Path("/run/libvirt/libvirt-sock")


def libvirtd_available() -> str | None:
    """None when a libvirtd can run here, else why not (for ``pytest.skip``... never used to
    hide a missing package in CI: ``./dev setup`` installs it)."""
    if shutil.which("libvirtd") is None:
        return "libvirtd is not installed (./dev setup installs it)"
    return None


def ensure_libvirtd(timeout: float = 60) -> None:
    """Start virtlogd, virtlockd and libvirtd unless libvirtd answers on its socket; wait until
    it does."""
    libvirt = load_libvirt()

    def answers() -> bool:
        try:
            libvirt.open(URI).close()
            return True
        except libvirt.libvirtError:
            return False

    if answers():
        return
    for argv in (["virtlogd", "-d"], ["virtlockd", "-d"],
                 ["libvirtd", "-d", "--pid-file", "/run/coriolis-test-libvirtd.pid"]):
        subprocess.run(argv, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers():
            return
        time.sleep(0.5)
    raise RuntimeError(f"libvirtd did not answer on {URI} within {timeout:.0f}s")


def open_path(path: Path) -> None:
    """Let ``libvirt-qemu`` reach ``path``: o+x on it and every parent folder."""
    for p in [path, *path.parents]:
        mode = p.stat().st_mode
        if not mode & 0o001:
            os.chmod(p, mode | 0o001)


@contextlib.contextmanager
def libvirt_host(root: Path | None = None, prefix: str | None = None) -> Iterator[LibvirtHost]:
    """A ``LibvirtHost`` rooted in ``root``, by default in a new folder of /tmp (not pytest's
    ``tmp_path``: another pytest session on the machine makes ``/tmp/pytest-of-<user>`` 0700
    again, which stops qemu (``libvirt-qemu``) from reaching the images) removed at the end,
    with all it made. Fails the test when libvirtd cannot run here (``./dev setup`` installs
    it: a missing daemon is never a skip). ``prefix``: the start of every name it makes
    (default ``ct<hex>``)."""
    why = libvirtd_available()
    if why:
        pytest.fail(why)
    own = root is None
    base = Path(tempfile.mkdtemp(prefix="coriolis-lv-")) if own else root
    assert base is not None
    where = base / "host" if own else base
    host = LibvirtHost(where, prefix=prefix) if prefix else LibvirtHost(where)
    try:
        yield host
    finally:
        try:
            host.close()
        finally:
            if own:
                shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def small_mount(folder: Path, size: str) -> Iterator[None]:
    """A tmpfs of ``size`` (``8m``) mounted on ``folder`` (for a pool without space);
    ``pytest.skip`` when mounting is not allowed here."""
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {proc.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@dataclass
class LibvirtHost:
    """What one test made on the host, all named ``<prefix>-...``; ``close`` removes it."""

    root: Path
    prefix: str = field(default_factory=lambda: f"ct{uuid.uuid4().hex[:6]}")
    conn: Any = None

    def __post_init__(self) -> None:
        ensure_libvirtd()
        self.libvirt = load_libvirt()
        self.conn = self.libvirt.open(URI)
        self.root.mkdir(parents=True, exist_ok=True)
        open_path(self.root)

    def name(self, what: str) -> str:
        return f"{self.prefix}-{what}"

    def connection_info(self, scratch: bool = True) -> dict[str, Any]:
        """This host's daemon, exports' scratch files under ``root/scratch`` (``scratch``;
        an API server accepts that only when ``root`` is in the project's local roots), else
        in the default folder (a destination-only endpoint makes none)."""
        info: dict[str, Any] = {"uri": URI}
        if scratch:
            info["scratch_dir"] = str(self.root / "scratch")
        return info

    # --- storage pools and networks --------------------------------------------------------

    def add_pool(self, what: str) -> Any:
        """A running dir pool ``<prefix>-<what>`` in ``root/pools/<what>``."""
        folder = self.root / "pools" / what
        folder.mkdir(parents=True, exist_ok=True)
        open_path(folder)
        xml = (f"<pool type='dir'><name>{self.name(what)}</name>"
               f"<target><path>{escape(str(folder))}</path></target></pool>")
        pool = self.conn.storagePoolDefineXML(xml, 0)
        pool.create(0)
        return pool

    def add_network(self, what: str, dhcp: bool = False) -> Any:
        """A running isolated network ``<prefix>-<what>`` (a bridge; no DHCP unless ``dhcp``:
        then a /24 in 10.0.0.0/8 picked at random among those no other network uses, the
        host at .1 and DHCP from .100 to .200, which guests booted on it get addresses
        from: ``network_subnet``)."""
        bridge = f"vb{self.prefix[2:]}{what[:4]}"[:15]
        for _attempt in range(8):
            ip = ""
            if dhcp:
                net = f"10.{random.randint(1, 254)}.{random.randint(0, 255)}"
                ip = (f"<ip address='{net}.1' netmask='255.255.255.0'><dhcp>"
                      f"<range start='{net}.100' end='{net}.200'/></dhcp></ip>")
            xml = (f"<network><name>{self.name(what)}</name>"
                   f"<bridge name='{bridge}' stp='off'/>{ip}</network>")
            net_obj = self.conn.networkDefineXML(xml)
            try:
                net_obj.create()
                return net_obj
            except self.libvirt.libvirtError:
                net_obj.undefine()
                if not dhcp:
                    raise
        raise RuntimeError(f"no free subnet for network {self.name(what)}")

    def network_subnet(self, what: str) -> str | None:
        """The ``a.b.c.`` prefix of a DHCP network's /24, None without one."""
        xml = self.conn.networkLookupByName(self.name(what)).XMLDesc(0)
        found = ET.fromstring(xml).find("./ip")
        if found is None:
            return None
        return str(found.get("address", "")).rsplit(".", 1)[0] + "."

    # --- domains ---------------------------------------------------------------------------

    def define_domain(self, what: str, disks: list[tuple[Path, str]], network: str | None,
                      *, memory_mib: int = 128, vcpus: int = 1, running: bool = False,
                      mac: str | None = None, extra_devices: str = "") -> Any:
        """A domain ``<prefix>-<what>`` (TCG) with ``disks`` ((file, format), as vda, vdb...,
        virtio) and one virtio NIC on libvirt network ``network`` (its full name); started
        when ``running`` (it has no OS: qemu runs the firmware, which finds nothing to boot
        and waits, which is all a live export needs)."""
        for path, _fmt in disks:
            open_path(path.parent)
        devices = "".join(
            f"<disk type='file' device='disk'><driver name='qemu' type='{fmt}'/>"
            f"<source file='{escape(str(path))}'/><target dev='vd{chr(97 + i)}' bus='virtio'/>"
            "</disk>" for i, (path, fmt) in enumerate(disks))
        if network:
            devices += (f"<interface type='network'><source network='{escape(network)}'/>"
                        + (f"<mac address='{mac}'/>" if mac else "")
                        + "<model type='virtio'/></interface>")
        xml = (f"<domain type='qemu'><name>{self.name(what)}</name>"
               f"<memory unit='MiB'>{memory_mib}</memory><vcpu>{vcpus}</vcpu>"
               "<os><type arch='x86_64' machine='pc'>hvm</type></os>"
               f"<devices>{devices}{extra_devices}</devices></domain>")
        dom = self.conn.defineXML(xml)
        if running:
            dom.create()
        return dom

    def guest_write(self, dom: Any, writes: list[tuple[int, int, int]]) -> None:
        """Write ``(pattern byte, offset, length)`` ranges into running domain ``dom``'s vda
        as its guest would (qemu-io over the monitor, one virsh session), without an OS."""
        commands = " ; ".join(
            f"qemu-monitor-command {dom.name()} --hmp 'qemu-io -d "
            "/machine/peripheral/virtio-disk0/virtio-backend "
            f"\"write -P {pattern} {offset} {length}\"'" for pattern, offset, length in writes)
        proc = subprocess.run(["virsh", "-c", URI, commands], capture_output=True, text=True)
        if proc.returncode != 0 or any(w in proc.stdout.lower() for w in ("error", "fail")):
            raise RuntimeError(f"qemu-io in {dom.name()} failed: {proc.stderr}{proc.stdout}")

    # --- what exists ------------------------------------------------------------------------

    def inventory(self) -> set[str]:
        """Every domain, checkpoint, pool, volume and network of this prefix, every file
        under ``root`` but the pools' folders themselves, and every export socket folder."""
        found: set[str] = set()
        for dom in self.conn.listAllDomains(0):
            if dom.name().startswith(self.prefix):
                found.add(f"domain:{dom.name()}")
                found.update(f"checkpoint:{dom.name()}/{cp.getName()}"
                             for cp in dom.listAllCheckpoints(0))
                if dom.isActive():
                    job = dom.jobInfo()
                    if job and job[0] != self.libvirt.VIR_DOMAIN_JOB_NONE:
                        found.add(f"job:{dom.name()}")
        for pool in self.conn.listAllStoragePools(0):
            if pool.name().startswith(self.prefix):
                found.add(f"pool:{pool.name()}")
                if pool.isActive():
                    pool.refresh(0)
                    found.update(f"volume:{pool.name()}/{v.name()}"
                                 for v in pool.listAllVolumes(0))
        for net in self.conn.listAllNetworks(0):
            if net.name().startswith(self.prefix):
                found.add(f"network:{net.name()}")
        found.update(f"file:{p.relative_to(self.root)}" for p in self.root.rglob("*")
                     if not p.is_dir())
        # Export sockets live in short folders outside root (one run of tests at a time:
        # any folder there is a leftover of this process).
        if SOCKET_ROOT.is_dir():
            found.update(f"sockets:{p.name}" for p in SOCKET_ROOT.iterdir())
        return found

    def close(self) -> None:
        """Remove every domain (destroyed, undefined with its checkpoints and NVRAM; its
        serial console's log file when named with the prefix), pool
        (with its volumes) and network of this prefix."""
        libvirt = self.libvirt
        for dom in self.conn.listAllDomains(0):
            if not dom.name().startswith(self.prefix):
                continue
            logs = [log.get("file") for log in
                    ET.fromstring(dom.XMLDesc(0)).findall("./devices/serial/log")]
            if dom.isActive():
                try:
                    dom.abortJob()
                except libvirt.libvirtError:
                    pass
                dom.destroy()
            for log in logs:
                if log and os.path.basename(log).startswith(self.prefix):
                    Path(log).unlink(missing_ok=True)
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
                              | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                              | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        for pool in self.conn.listAllStoragePools(0):
            if pool.name().startswith(self.prefix):
                if pool.isActive():
                    pool.destroy()
                pool.undefine()
        for net in self.conn.listAllNetworks(0):
            if net.name().startswith(self.prefix):
                if net.isActive():
                    net.destroy()
                net.undefine()
        self.conn.close()
