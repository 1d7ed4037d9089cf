"""What Coriolis' Windows morpher and ``virt-v2v -i disk -o local`` change on the same Windows
test disk (coriolis.windows_image, Server 2019), with the same virtio-win tree made here.

Prints, for each tool, the registry values (SYSTEM and SOFTWARE) and the files it added,
changed or removed compared with the source disk. virt-v2v (Debian ``virt-v2v``) refuses to
convert Windows without ``rhsrvany.exe`` (its first-boot service program, not packaged in
Debian): a stand-in file (a PE header) is put in ``VIRT_TOOLS_DATA_DIR``; nothing boots, so
only what is written is compared.

    .venv/bin/python -m benchmarks.windows_vs_virt_v2v [WORK_DIR]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from coriolis import windows_image
from coriolis.osmorphing.appliance import GuestDisk, new_handle
from coriolis.osmorphing.isolated import MorphRequest, morph_in_child
from coriolis.osmorphing.windows.registry import decode

HIVES = ("/Windows/System32/config/SYSTEM", "/Windows/System32/config/SOFTWARE")


def _walk(g: Any, node: int, path: str, out: dict[str, Any]) -> None:
    for v in g.hivex_node_values(node):
        h = v["hivex_value_h"]
        out[f"{path}\\{g.hivex_value_key(h)}"] = decode(
            g.hivex_value_type(h), bytes(g.hivex_value_value(h)))
    for c in g.hivex_node_children(node):
        child = c["hivex_node_h"]
        _walk(g, child, f"{path}\\{g.hivex_node_name(child)}", out)


def snapshot(disk: Path, fmt: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(registry values by path, file checksums by path) of a Windows test disk."""
    g = new_handle()
    try:
        g.add_drive_opts(str(disk), format=fmt, readonly=True)
        g.launch()
        g.mount_ro("/dev/sda1", "/")
        values: dict[str, Any] = {}
        for hive in HIVES:
            g.hivex_open(hive, write=False)
            _walk(g, g.hivex_root(), hive.rsplit("/", 1)[1], values)
            g.hivex_close()
        files = {f"/{f}": "" for f in g.find("/")}
        for path in list(files):
            if g.is_file(path) and not path.startswith(HIVES):
                files[path] = str(g.checksum("sha256", path))
        return values, files
    finally:
        g.close()


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    lines = [f"+ {k} = {after[k]!r}" for k in sorted(after.keys() - before.keys())]
    lines += [f"- {k}" for k in sorted(before.keys() - after.keys())]
    lines += [f"~ {k} = {after[k]!r}" for k in sorted(before.keys() & after.keys())
              if before[k] != after[k]]
    return lines


def run_virt_v2v(source: Path, tree: Path, work: Path) -> Path:
    tools = work / "virt-tools"
    tools.mkdir(exist_ok=True)
    (tools / "rhsrvany.exe").write_bytes(windows_image.pe_header() + b"stand-in\n")
    out = work / "v2v-out"
    out.mkdir(exist_ok=True)
    env = dict(os.environ, VIRTIO_WIN=str(tree), VIRT_TOOLS_DATA_DIR=str(tools),
               LIBGUESTFS_BACKEND="direct", LIBGUESTFS_BACKEND_SETTINGS="force_tcg")
    subprocess.run(["virt-v2v", "-i", "disk", str(source), "-o", "local", "-os", str(out),
                    "-of", "raw", "-on", "v2v"], check=True, env=env)
    return out / "v2v-sda"


def main(work: Path) -> None:
    base = windows_image.build("win2k19")
    tree = windows_image.make_virtio_win_tree(work / "virtio-win")
    source = work / "source.raw"
    shutil.copyfile(base, source)
    results: dict[str, Path] = {}
    if shutil.which("virt-v2v"):
        results["virt-v2v"] = run_virt_v2v(source, tree, work)
    else:
        print("virt-v2v is not installed (Debian: apt-get install virt-v2v)")
    ours = work / "coriolis.raw"
    shutil.copyfile(base, ours)
    os.environ["CORIOLIS_VIRTIO_WIN"] = str(tree)
    profile = {"platform": "libvirt", "disk_bus": "virtio", "nic_model": "virtio",
               "nics": [{"mac": "52:54:00:aa:bb:01"}], "keep_static_ips": True}
    morph_in_child(MorphRequest([GuestDisk(str(ours), "raw", "disk0")], profile, "vm1",
                                [windows_image.SOURCE_MAC]), print, lambda: False)
    results["coriolis"] = ours
    reg0, files0 = snapshot(source, "raw")
    for name, disk in results.items():
        reg, files = snapshot(disk, "raw")
        print(f"\n== {name}: registry ==")
        print("\n".join(diff(reg0, reg)))
        print(f"\n== {name}: files ==")
        print("\n".join(diff(files0, files)))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
