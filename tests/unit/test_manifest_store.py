"""The worker's block-manifest store (``transfer.manifests``): one folder per volume keyed by
``volume_id`` (a volume of an older version by its path, where its manifests already are),
one file per generation, prune and forget."""

from __future__ import annotations

import hashlib
from pathlib import Path

from coriolis.transfer.manifests import ManifestStore


def test_manifests_are_kept_per_volume_id_and_generation(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path / "manifests")
    a = {"disk_id": "disk0", "volume_id": "v-a", "path": "/same/file"}
    b = {"disk_id": "disk0", "volume_id": "v-b", "path": "/same/file"}
    assert store.folder(a) != store.folder(b)  # a recreated volume starts anew
    assert store.path(a).name == "initial.manifest"
    assert store.path({**a, "manifest_generation": "e1"}) == store.folder(a) / "e1.manifest"
    assert store.path(a, "e2") == store.folder(a) / "e2.manifest"


def test_an_old_volume_without_an_id_keeps_the_folder_it_had(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path)
    old = {"disk_id": "disk0", "path": "/c/storage/x.raw"}
    digest = hashlib.sha256(b"/c/storage/x.raw|disk0").hexdigest()[:24]
    assert store.folder(old) == tmp_path / digest


def test_prune_keeps_the_committed_generation_and_forget_drops_all(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path)
    volume = {"disk_id": "disk0", "volume_id": "v", "manifest_generation": "e2"}
    store.folder(volume).mkdir(parents=True)
    for gen in ("e1", "e2", "e3"):
        store.path(volume, gen).write_bytes(b"m")
    store.prune(volume)
    assert [p.name for p in store.folder(volume).iterdir()] == ["e2.manifest"]
    store.forget(volume)
    store.forget(volume)  # idempotent
    assert not store.folder(volume).exists()
    store.prune(volume)  # nothing there: nothing to do
