"""Python bindings that Debian ships only for its own python3 (libguestfs, libnbd), loaded
into this interpreter (a virtualenv) from the system's dist-packages when they match its
version."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SYSTEM_SITE = Path("/usr/lib/python3/dist-packages")


def load_system_module(name: str, native: str) -> ModuleType | None:
    """The module ``name`` (``SYSTEM_SITE/name.py``) with its native extension ``native``
    (``native.cpython-3X-*.so`` for this interpreter's version) loaded from the system's
    dist-packages; None when either is not installed. Callers hold a lock: a module being
    executed is already in ``sys.modules``."""
    tag = f"cpython-{sys.version_info.major}{sys.version_info.minor}"
    found = [p for p in sorted(SYSTEM_SITE.glob(f"{native}.cpython-*.so")) if tag in p.name]
    wrapper = SYSTEM_SITE / f"{name}.py"
    if not found or not wrapper.exists():
        return None
    for module_name, path in ((native, found[0]), (name, wrapper)):
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
