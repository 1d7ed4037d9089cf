"""Small Linux guest disks for OS-morphing tests, built in seconds with host tools (sfdisk,
mkfs.ext4 -d, mkfs.vfat and mtools; no loop device, no appliance), and read back the same way
(debugfs, mtype) once a morphing has closed them.

A guest is a GPT disk of partitions, each a file tree. ``userland`` adds what the morpher needs
to run commands in it: the host's ``dash`` as ``/bin/sh`` and ``chmod`` with the C library they
load, and *recording stubs* in place of the distribution's tools (update-initramfs, dracut,
grub2-mkconfig...): each appends ``NAME ARGS`` to ``/var/log/coriolis-calls`` and does nothing
else. So these guests prove what the morpher writes and which tools it asks for, not what
those tools would produce (the Debian boot test runs the real ones).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

CALLS = "/var/log/coriolis-calls"
MIB = 1024 * 1024
_FIRST = MIB  # the first partition's offset (sfdisk's default alignment)
_HOST_FILES = ("/bin/dash", "/bin/chmod", "/lib/x86_64-linux-gnu/libc.so.6",
               "/lib64/ld-linux-x86-64.so.2")


@dataclass
class Partition:
    fstype: str  # ext4 | vfat | swap
    size_mib: int
    uuid: str  # ext4/swap: a UUID; vfat: XXXX-XXXX
    files: dict[str, str] = field(default_factory=dict)  # path in the file system -> text
    executables: tuple[str, ...] = ()  # of ``files``, those made executable
    last_mounted: str = ""  # ext4: the superblock's "last mounted on"


def userland(stubs: list[str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """Files for a root file system: a shell, chmod, and a recording stub at each path of
    ``stubs`` (e.g. ``/usr/sbin/dracut``); returns (files, executables)."""
    files = {path: f'#!/bin/sh\necho "{path.rsplit("/", 1)[1]} $*" >> {CALLS}\n'
             for path in stubs}
    files[CALLS] = ""
    return files, tuple(stubs)


def _fill(tree: Path, part: Partition, with_host_files: bool) -> None:
    for rel, text in part.files.items():
        path = tree / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if rel in part.executables:
            path.chmod(0o755)
    if with_host_files:
        for host in _HOST_FILES:
            path = tree / host.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(host).resolve(), path)
        (tree / "bin/sh").symlink_to("dash")


def _make_fs(part: Partition, image: Path, tree: Path) -> None:
    size = str(part.size_mib * 1024)  # KiB
    if part.fstype == "ext4":
        subprocess.run(["mkfs.ext4", "-q", "-F", "-U", part.uuid, "-d", str(tree), str(image),
                        f"{size}k"], check=True, capture_output=True)
        if part.last_mounted:
            subprocess.run(["tune2fs", "-M", part.last_mounted, str(image)], check=True,
                           capture_output=True)
    elif part.fstype == "swap":
        image.write_bytes(b"\0" * part.size_mib * MIB)
        subprocess.run(["mkswap", "-U", part.uuid, str(image)], check=True,
                       capture_output=True)
    elif part.fstype == "vfat":
        subprocess.run(["mkfs.vfat", "-C", "-i", part.uuid.replace("-", ""), str(image),
                        size], check=True, capture_output=True)
        for entry in tree.iterdir():
            subprocess.run(["mcopy", "-s", "-i", str(image), str(entry), "::/"], check=True)
    else:
        raise ValueError(f"unknown file system type {part.fstype}")


def build(path: Path, partitions: list[Partition], *, root_index: int) -> Path:
    """A raw GPT disk at ``path`` holding ``partitions`` in order (partition N is
    ``partitions[N-1]``); the one at ``root_index`` (0-based; -1: none) gets the host files a
    shell needs."""
    total = _FIRST + sum(p.size_mib for p in partitions) * MIB + MIB
    with path.open("wb") as f:
        f.truncate(total)
    layout = "label: gpt\n" + "".join(f"size={p.size_mib}MiB\n" for p in partitions)
    subprocess.run(["sfdisk", "-q", str(path)], input=layout, text=True, check=True)
    offset = _FIRST
    for index, part in enumerate(partitions):
        work = path.parent / f".{path.name}.p{index + 1}"
        tree = work.with_suffix(".tree")
        tree.mkdir()
        _fill(tree, part, index == root_index)
        _make_fs(part, work, tree)
        subprocess.run(["dd", f"if={work}", f"of={path}", "bs=1M", f"seek={offset // MIB}",
                        "conv=notrunc", "status=none"], check=True)
        offset += part.size_mib * MIB
        work.unlink()
        shutil.rmtree(tree)
    return path


def _extract(path: Path, partitions: list[Partition], number: int) -> Path:
    offset = _FIRST // MIB + sum(p.size_mib for p in partitions[:number - 1])
    out = path.parent / f".{path.name}.read{number}"
    subprocess.run(["dd", f"if={path}", f"of={out}", "bs=1M", f"skip={offset}",
                    f"count={partitions[number - 1].size_mib}", "status=none"], check=True)
    return out


def read(path: Path, partitions: list[Partition], number: int, file: str) -> str | None:
    """The text of ``file`` in partition ``number`` (1-based) of a disk ``build`` made, None
    when it is not there."""
    part = _extract(path, partitions, number)
    try:
        if partitions[number - 1].fstype == "vfat":
            proc = subprocess.run(["mtype", "-i", str(part), f"::{file}"],
                                  capture_output=True, text=True)
        else:
            proc = subprocess.run(["debugfs", "-R", f"cat {file}", str(part)],
                                  capture_output=True, text=True)
            if "File not found" in proc.stderr:
                return None
        return proc.stdout if proc.returncode == 0 else None
    finally:
        part.unlink()


def listdir(path: Path, partitions: list[Partition], number: int, folder: str) -> list[str]:
    """Names in ``folder`` of an ext4 partition (without . and ..)."""
    part = _extract(path, partitions, number)
    try:
        out = subprocess.run(["debugfs", "-R", f"ls -p {folder}", str(part)],
                             capture_output=True, text=True, check=True).stdout
    finally:
        part.unlink()
    names = [line.split("/")[5] for line in out.splitlines() if line.count("/") >= 6]
    return sorted(n for n in names if n not in (".", ".."))
