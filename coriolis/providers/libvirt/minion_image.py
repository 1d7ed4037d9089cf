"""The image a libvirt minion boots: a small Debian root file system, its kernel and initrd.

Built with debootstrap (``minbase`` plus a kernel, udev, busybox and python3) into a folder,
then made into an ext4 image with ``mke2fs -d`` (no partition table, no boot loader, no
loop device, no libguestfs): the minion boots it by direct kernel boot (``<kernel>``,
``<initrd>``), read-only, with ``init=`` a shell script of this module, which

- mounts /proc, /sys, /dev, /run, starts udevd (so hot-plugged disks get their
  ``/dev/disk/by-id`` names);
- unpacks the minion's *config disk* (a tar archive on a raw virtio disk with serial
  ``coriolis-config``, made by the provider for each minion: agent certificate, key, agent
  key, and the coriolis code the agent runs) into /run/minion;
- takes an address by DHCP (busybox ``udhcpc``) on eth0;
- runs the writer agent (``coriolis-server writer``'s code) on port ``AGENT_PORT`` over the
  config's certificate, serving ``/dev``, logging every request on the serial console.

The third-party Python packages the agent imports (pydantic, xxhash, zstandard,
cryptography...) are copied from this interpreter's site-packages into /opt/coriolis-deps
(the guest's python3 is the same minor version, 3.11); the coriolis code comes with the config
disk, so a change of the code needs no new image.

Cached (``CORIOLIS_MINION_IMAGE_CACHE``, default ``~/.cache/coriolis/minion-image``) under a
name that changes with the packages, the copied dependencies' versions and the build steps.
"""

from __future__ import annotations

import compileall
import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import coriolis

SUITE = "bookworm"
MIRROR = os.environ.get("CORIOLIS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ("linux-image-cloud-amd64", "udev", "busybox", "python3", "kmod")
AGENT_PORT = 7668
CONFIG_SERIAL = "coriolis-config"
READY_MARK = "coriolis-minion: agent starting"
AGENT_IMPORTS = ("coriolis.cmd.writer", "coriolis.transfer.agent",
                 "coriolis.transfer.agent_http", "coriolis.transfer.tls")
PRUNE = ("var/cache/apt/archives", "usr/share/doc", "usr/share/man", "usr/share/locale",
         "usr/share/info", "var/lib/apt/lists", "usr/share/zoneinfo", "boot")
BUILD_STEPS = 1  # bump when the steps below change

INIT = f"""#!/bin/sh
# PID 1 of a Coriolis minion (coriolis/providers/libvirt/minion_image.py).
export PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755 run /run
mount -t tmpfs tmp /tmp
exec </dev/null >/dev/ttyS0 2>&1
echo "coriolis-minion: booted in $(cut -d' ' -f1 /proc/uptime) s"
/lib/systemd/systemd-udevd --daemon
udevadm trigger --action=add
udevadm settle -t 30
mkdir -p -m 0700 /run/minion
tar -xf /dev/disk/by-id/virtio-{CONFIG_SERIAL} -C /run/minion || echo "coriolis-minion: no config"
busybox ip link set lo up
busybox ip link set eth0 up
busybox udhcpc -i eth0 -s /usr/local/sbin/coriolis-udhcpc -t 60 -T 1 -A 1 -b
echo "coriolis-minion: address $(busybox ip -4 -o addr show dev eth0 | awk '{{print $4}}')"
cd /run/minion
export PYTHONPATH=/run/minion/code:/opt/coriolis-deps PYTHONDONTWRITEBYTECODE=1
while true; do
    echo "{READY_MARK} at $(cut -d' ' -f1 /proc/uptime) s"
    python3 /usr/local/sbin/coriolis-minion-agent writer --host 0.0.0.0 --port {AGENT_PORT} \\
        --root /dev --data-dir /run/minion/agent -v
    echo "coriolis-minion: agent ended ($?), restarting"
    sleep 1
done
"""

UDHCPC = """#!/bin/sh
case "$1" in
    deconfig) busybox ip addr flush dev "$interface"; busybox ip link set "$interface" up ;;
    bound|renew)
        busybox ip addr flush dev "$interface"
        busybox ip addr add "$ip/${mask:-24}" dev "$interface"
        [ -n "$router" ] && busybox ip route replace default via "${router%% *}" ;;
esac
exit 0
"""

AGENT = """import argparse, sys
from coriolis.cmd import writer
parser = argparse.ArgumentParser(prog="coriolis-minion-agent")
writer.register_subcommands(parser.add_subparsers(required=True))
args = parser.parse_args(sys.argv[1:])
args.func(args)
"""

FILES = {
    "usr/local/sbin/coriolis-minion-init": INIT,
    "usr/local/sbin/coriolis-udhcpc": UDHCPC,
    "usr/local/sbin/coriolis-minion-agent": AGENT,
    "etc/hostname": "coriolis-minion\n",
    "etc/hosts": "127.0.0.1 localhost coriolis-minion\n",
}
CMDLINE = ("root=/dev/vda ro console=ttyS0,115200n8 net.ifnames=0 quiet panic=10 "
           "init=/usr/local/sbin/coriolis-minion-init")


@dataclass(frozen=True)
class MinionImage:
    """The built image's files (in the cache)."""

    kernel: Path
    initrd: Path
    rootfs: Path  # qcow2, ext4 without a partition table

    @property
    def files(self) -> dict[str, Path]:
        return {"kernel": self.kernel, "initrd": self.initrd, "rootfs": self.rootfs}


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "coriolis" / "minion-image"
    return Path(os.environ.get("CORIOLIS_MINION_IMAGE_CACHE", default))


def _dependency_dirs() -> dict[str, Path]:
    """The top-level third-party modules the agent imports, from this interpreter's
    site-packages (name -> path), found by importing the agent's modules in a child."""
    code = ("import json, sys\n"
            f"for m in {list(AGENT_IMPORTS)!r}: __import__(m)\n"
            "print(json.dumps([getattr(m, '__file__', None) for m in list(sys.modules.values())"
            "]))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    roots = [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]
    found: dict[str, Path] = {}
    for file in json.loads(out):
        for root in roots:
            if file and file.startswith(root + os.sep):
                top = file[len(root) + 1:].split(os.sep)[0]
                if not top.startswith(("__editable__", "_distutils_hack", "coriolis")):
                    found[top] = Path(root) / top
    return found


def _dependency_versions(deps: dict[str, Path]) -> list[str]:
    dists = importlib.metadata.packages_distributions()
    names = sorted({d for top in deps for d in dists.get(top.split(".")[0], [top])})
    versions = []
    for name in names:
        try:
            versions.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(name)
    return versions


def image_dir() -> Path:
    """The cache folder of the image for the current inputs."""
    inputs = json.dumps([BUILD_STEPS, SUITE, PACKAGES, FILES, CMDLINE, PRUNE,
                         _dependency_versions(_dependency_dirs()),
                         sys.version_info[:2]])
    return cache_dir() / f"debian12-minion-{hashlib.sha256(inputs.encode()).hexdigest()[:12]}"


def _image(folder: Path) -> MinionImage:
    return MinionImage(folder / "vmlinuz", folder / "initrd.img", folder / "rootfs.qcow2")


def _configure(root: Path, deps: dict[str, Path]) -> None:
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if rel.startswith("usr/local/sbin/"):
            path.chmod(0o755)
    target = root / "opt" / "coriolis-deps"
    target.mkdir(parents=True)
    for name, path in deps.items():
        if path.is_dir():
            shutil.copytree(path, target / name,
                            ignore=shutil.ignore_patterns("__pycache__", "tests"))
        else:
            shutil.copy2(path, target / name)
    compileall.compile_dir(str(target), quiet=2, workers=1)
    for rel in PRUNE:
        shutil.rmtree(root / rel, ignore_errors=True)
        (root / rel).mkdir(parents=True, exist_ok=True)


def build(log: bool = True) -> MinionImage:
    """Build the image unless the cache has it (about 2 minutes here: debootstrap, then
    ``mke2fs -d``); needs root (debootstrap). Returns its files."""
    folder = image_dir()
    image = _image(folder)
    if all(p.exists() for p in image.files.values()):
        return image
    if os.geteuid() != 0:
        raise RuntimeError("building the minion image needs root (debootstrap)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        root = Path(tmp) / "root"
        out = None if log else subprocess.DEVNULL
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                        SUITE, str(root), MIRROR], check=True, stdout=out)
        staging = Path(tmp) / "image"
        staging.mkdir()
        kernels = sorted((root / "boot").glob("vmlinuz-*"))
        initrds = sorted((root / "boot").glob("initrd.img-*"))
        if not kernels or not initrds:
            raise RuntimeError("debootstrap installed no kernel/initrd in /boot")
        shutil.copyfile(kernels[-1], staging / "vmlinuz")
        shutil.copyfile(initrds[-1], staging / "initrd.img")
        _configure(root, _dependency_dirs())
        used = int(subprocess.run(["du", "-sb", str(root)], check=True, capture_output=True,
                                  text=True).stdout.split()[0])
        size_mib = used * 13 // 10 // 2**20 + 64
        raw = Path(tmp) / "rootfs.raw"
        subprocess.run(["mke2fs", "-q", "-t", "ext4", "-L", "minion", "-d", str(root),
                        str(raw), f"{size_mib}M"], check=True)
        shutil.rmtree(root)
        subprocess.run(["qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2",
                        str(raw), str(staging / "rootfs.qcow2")], check=True)
        raw.unlink()
        (staging / "build.json").write_text(json.dumps(
            {"seconds": round(time.monotonic() - started, 1), "rootfs_mib": size_mib}))
        for p in staging.iterdir():
            p.chmod(0o644)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    return image


def code_archive() -> bytes:
    """The coriolis package (sources and their 3.11 bytecode) as a tar, for a config disk."""
    package = Path(coriolis.__file__).parent
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "coriolis"
        shutil.copytree(package, copy, ignore=shutil.ignore_patterns(
            "__pycache__", "*.pyc", "web", "static"))
        compileall.compile_dir(str(copy), quiet=2, workers=1)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(copy, arcname="code/coriolis")
        return buf.getvalue()


def config_disk(files: dict[str, bytes], code: bytes) -> bytes:
    """A config disk's content: a tar of ``files`` (``agent/<name>``, mode 0600) and the
    code archive's members, padded to a whole MiB."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        folder = tarfile.TarInfo("agent")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o700
        tar.addfile(folder)
        for name, data in files.items():
            info = tarfile.TarInfo(f"agent/{name}")
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
        with tarfile.open(fileobj=io.BytesIO(code)) as src:
            for member in src.getmembers():
                tar.addfile(member, src.extractfile(member) if member.isfile() else None)
    data = buf.getvalue()
    return data + b"\0" * (-len(data) % 2**20)


if __name__ == "__main__":
    print(build().rootfs.parent)
