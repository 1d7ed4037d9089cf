"""Where a worker keeps the block manifests of destination volumes: one store under its data
directory, one folder per volume (keyed by the volume's ``volume_id``), one file per
generation.

A generation is the execution whose copy a manifest describes. The committed one (the
volume's ``manifest_generation``) moves only when that execution commits, so a worker never
trusts a manifest that a rolled-back copy, or another worker's copy, made stale (it resends
everything instead).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

JSON = dict[str, Any]


class ManifestStore:
    """The manifests under ``root`` (``<worker data dir>/manifests``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, volume: JSON) -> Path:
        """One volume's folder: keyed by ``volume_id``; a volume of an older version
        without one by its ``path`` and ``disk_id`` (where those were kept then)."""
        ident = (f"id|{volume['volume_id']}" if volume.get("volume_id")
                 else f"{volume.get('path')}|{volume['disk_id']}")
        return self.root / hashlib.sha256(ident.encode()).hexdigest()[:24]

    def path(self, volume: JSON, generation: str | None = None) -> Path:
        """The manifest of a generation (default: the committed one,
        ``volume["manifest_generation"]``; ``initial`` before any)."""
        gen = generation if generation is not None else volume.get("manifest_generation", "")
        return self.folder(volume) / f"{gen or 'initial'}.manifest"

    def prune(self, volume: JSON) -> None:
        """Drop the manifests of every generation but the committed one."""
        keep = self.path(volume)
        folder = keep.parent
        for file in folder.glob("*") if folder.is_dir() else []:
            if file != keep:
                file.unlink(missing_ok=True)

    def forget(self, volume: JSON) -> None:
        """Drop every manifest of a volume (it is deleted)."""
        shutil.rmtree(self.folder(volume), ignore_errors=True)
