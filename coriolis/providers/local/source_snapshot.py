"""Point-in-time copies of source disk images made of several files.

An image is often more than its top file: a qcow2 overlay reads unwritten clusters from its
backing file (and that one from its own), a vmdk descriptor names extent files, a qcow2 image
may keep its data in an external data file. A snapshot copies every file of the image (a
reflink where the file system has them) into one folder, keeping their relative layout, so the
relative names that reference each other still resolve to the copies; a qcow2 file that names
its backing file by an absolute path is pointed at the copy (``qemu-img rebase -u``). The copy
is then checked: qemu must find every file of it inside the folder, or the snapshot fails
naming the file it would still read from the live image.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from coriolis import exceptions
from coriolis.transfer.images import backing_chain as _chain
from coriolis.transfer.images import image_files


def reflink_copy(src: Path, dst: Path, bases: tuple[Path, ...] = ()) -> None:
    """Copy ``src`` to ``dst`` (reflink where the file system has them, sparse). With
    ``bases``, the file is opened first without following a last symlink, the kernel's name
    for what was opened must be inside one of ``bases`` (``InvalidInput`` otherwise), and
    ``cp`` reads that descriptor: a folder swapped for a symlink after the caller checked
    the name copies nothing from outside."""
    if not bases:
        _cp(str(src), dst, src.name)
        return
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise exceptions.InvalidInput(f"disk file {src.name} cannot be opened: "
                                      f"{exc.strerror}") from None
    try:
        opened = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if not any(opened.is_relative_to(b) for b in bases):
            raise exceptions.InvalidInput(f"disk file {src.name} leads out of the instance "
                                          f"folder (to {opened})")
        _cp(f"/dev/fd/{fd}", dst, src.name, pass_fds=(fd,))
    finally:
        os.close(fd)


def _cp(src: str, dst: Path, name: str, pass_fds: tuple[int, ...] = ()) -> None:
    proc = subprocess.run(["cp", "--reflink=auto", "--sparse=always", src, str(dst)],
                          capture_output=True, text=True, pass_fds=pass_fds)
    if proc.returncode != 0:
        raise exceptions.ProviderError(f"cannot copy {name}: {proc.stderr.strip()}")


def snapshot_image(src: Path, fmt: str, folder: Path, bases: tuple[Path, ...] = ()) -> Path:
    """Copy the image at ``src`` (every file of it) into ``folder``; returns the path of the
    copy's top file. ``ProviderError`` when a file of the copy would still be outside
    ``folder`` (an absolute reference qemu-img cannot rewrite); with ``bases``,
    ``InvalidInput`` when a file, as opened, is outside them (see ``reflink_copy``)."""
    src = Path(os.path.abspath(src))
    chain = _chain(src, fmt)
    files = image_files(src, fmt)
    root = os.path.commonpath([os.path.dirname(f) for f in files])
    copies = {f: folder / os.path.relpath(f, root) for f in files}
    for original, copy in copies.items():
        copy.parent.mkdir(parents=True, exist_ok=True)
        reflink_copy(Path(original), copy, bases)
    for entry, below in zip(chain, chain[1:], strict=False):
        backing = entry.get("backing-filename")
        if entry.get("format") == "qcow2" and backing and os.path.isabs(backing):
            overlay = copies[os.path.normpath(entry["filename"])]
            target = copies[os.path.normpath(below["filename"])]
            proc = subprocess.run(
                ["qemu-img", "rebase", "-u", "-f", "qcow2",
                 "-F", entry.get("backing-filename-format") or below["format"],
                 "-b", os.path.relpath(target, overlay.parent), str(overlay)],
                capture_output=True, text=True)
            if proc.returncode != 0:
                raise exceptions.ProviderError(
                    f"cannot point the snapshot of {Path(entry['filename']).name} at its "
                    f"backing file's copy: {proc.stderr.strip()}")
    top = copies[os.path.normpath(str(src))]
    inside = str(folder.resolve()) + os.sep
    outside = [f for f in image_files(top, fmt)
               if not os.path.realpath(f).startswith(inside)]
    if outside:
        raise exceptions.ProviderError(
            f"disk {src.name}: its snapshot would still read {outside[0]}, which the image "
            "names by an absolute path that cannot be rewritten; snapshot it without "
            "\"snapshot\": true or make the reference relative")
    return top
