"""The build lock of a cache entry: a second process waits until the first is done, and a
killed holder does not leave the entry locked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HOLD = """
import sys, time
from pathlib import Path
from coriolis import cache_lock
with cache_lock.building(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
print("released", time.time(), flush=True)
"""


def _holder(entry: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(entry), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_builder_waits_for_the_first(tmp_path: Path) -> None:
    from coriolis import cache_lock
    entry = tmp_path / "image.qcow2"
    first = _holder(entry, 1.0)
    with cache_lock.building(entry):
        got = time.time()
    out, _ = first.communicate(timeout=30)
    released = float(out.split()[-1])
    assert got >= released - 0.05, "the lock was taken while another process held it"


def test_a_killed_holder_leaves_it_free(tmp_path: Path) -> None:
    from coriolis import cache_lock
    entry = tmp_path / "venv"
    holder = _holder(entry, 60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    start = time.monotonic()
    with cache_lock.building(entry):
        pass
    assert time.monotonic() - start < 5
