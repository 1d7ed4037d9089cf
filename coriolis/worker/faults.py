"""Fault injection for the crash tests: make the process die (SIGKILL, as ``kill -9``) at a
chosen moment of a chosen task. Off unless the environment variable is set; never set it in
production.

``CORIOLIS_TEST_CRASH_AT`` holds comma-separated ``TASK_TYPE:PHASE`` items, or ``@FILE``: a file
holding such items, read at every check, so a test can arm a crash in a running server. PHASE:

- ``during``: while the task runs, after part of its work is done: in the provider call of the
  multi-step local-provider methods (after the first disk is created, the first snapshot copy
  made, the first file of a cleanup removed, instance.json removed...), in REPLICATE_DISKS after
  the first chunk was written; for a task type without such a point (``crash_point`` is never
  called in its thread), as soon as the task is recorded RUNNING, before its runner starts.
- ``after``: the runner returned, its result is not yet reported (so not recorded).
- ``fail``: not a crash: the runner runs, then the task fails (``ProviderError("injected
  failure")``) as if its last step had, to drive an execution into its error path (cleanups
  and rollbacks that must undo real work).
- ``hold``: not a crash: the task stays RUNNING, doing nothing, until it is cancelled (then it
  ends CANCELED), so that a test can cancel an execution at a known step.

Each item fires once: from a file it is removed (the file rewritten, fsynced) before the kill;
a process started with the plain form dies with it, so restart it without the variable.
``crash_point()`` is what providers and runners call at their mid-work points; the worker sets
the task type of the calling thread (``running``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from coriolis import constants as c
from coriolis import exceptions

ENV = "CORIOLIS_TEST_CRASH_AT"
PHASES = ("during", "after", "fail", "hold")
LOG = logging.getLogger(__name__)

_local = threading.local()
_file_lock = threading.Lock()


def _items(text: str) -> list[str]:
    return [i.strip() for i in text.replace("\n", ",").split(",") if i.strip()]


def _take(task_type: str, phase: str, *, die: bool = False) -> bool:
    """Whether ``task_type:phase`` is armed; from a file, consumed. With ``die``, an armed
    item kills the process before the lock is released, so that no other thread consumes an
    item the dying process would never act on."""
    spec = os.environ.get(ENV)
    if not spec:
        return False
    wanted = f"{task_type}:{phase}"
    with _file_lock:
        if not spec.startswith("@"):
            found = wanted in _items(spec)
        else:
            path = Path(spec[1:])
            try:
                items = _items(path.read_text())
            except FileNotFoundError:
                return False
            found = wanted in items
            if found:
                items.remove(wanted)
                with open(path, "w") as f:
                    f.write(",".join(items))
                    f.flush()
                    os.fsync(f.fileno())
        if found:
            LOG.warning("%s: %s at %s", ENV, "killing this process" if die else "armed",
                        wanted)
            if die:
                for handler in logging.getLogger().handlers:
                    handler.flush()
                os.kill(os.getpid(), signal.SIGKILL)
    return found


@contextlib.contextmanager
def running(task_type: str, cancelled: Callable[[], bool]) -> Iterator[None]:
    """Around a task's runner in the worker: arms ``crash_point`` for this thread; holds
    until ``cancelled()``, or kills at the start of a ``during`` task that has no mid-work
    point (one ``MID_WORK`` does not name)."""
    if not os.environ.get(ENV):
        yield
        return
    if _take(task_type, "hold"):
        while not cancelled():
            time.sleep(0.1)
        raise exceptions.TaskCanceled(f"{task_type} cancelled while held")
    if task_type not in MID_WORK:
        _take(task_type, "during", die=True)
    _local.task_type = task_type
    try:
        yield
    finally:
        _local.task_type = None


def crash_point(task_type: str | None = None) -> None:
    """A mid-work point: dies here when ``TASK_TYPE:during`` is armed for the task running in
    this thread (or ``task_type``, from a helper thread of that task)."""
    if not os.environ.get(ENV):
        return
    current = task_type or getattr(_local, "task_type", None)
    if current:
        _take(current, "during", die=True)


def finished(task_type: str) -> None:
    """Called by the worker after the runner returned, before the result is reported: kills
    (``after``) or raises the injected failure (``fail``)."""
    if not os.environ.get(ENV):
        return
    _take(task_type, "after", die=True)
    if _take(task_type, "fail"):
        raise exceptions.ProviderError(f"injected failure ({ENV}={task_type}:fail)")


# Task types whose runner or local-provider method calls ``crash_point`` mid-work.
MID_WORK = frozenset({
    c.TASK_TYPE_CREATE_INSTANCE_DISKS, c.TASK_TYPE_DEPLOY_REPLICA_DISKS,
    c.TASK_TYPE_DEPLOY_MIGRATION_SOURCE_RESOURCES, c.TASK_TYPE_DEPLOY_REPLICA_SOURCE_RESOURCES,
    c.TASK_TYPE_DELETE_MIGRATION_SOURCE_RESOURCES, c.TASK_TYPE_DELETE_REPLICA_SOURCE_RESOURCES,
    c.TASK_TYPE_REPLICATE_DISKS, c.TASK_TYPE_DEPLOY_INSTANCE_RESOURCES,
    c.TASK_TYPE_DEPLOY_REPLICA_INSTANCE_RESOURCES, c.TASK_TYPE_CLEANUP_FAILED_INSTANCE_DEPLOYMENT,
    c.TASK_TYPE_CLEANUP_FAILED_REPLICA_INSTANCE_DEPLOYMENT,
    c.TASK_TYPE_CLEANUP_INSTANCE_TARGET_STORAGE, c.TASK_TYPE_DELETE_REPLICA_DISKS,
    # replica disk snapshots (coriolis/providers/local/replica_disks.py): after the first
    # volume's snapshot, half-way through an undo journal's replay, after the commit record
    c.TASK_TYPE_CREATE_REPLICA_DISK_SNAPSHOTS, c.TASK_TYPE_RESTORE_REPLICA_DISK_SNAPSHOTS,
    c.TASK_TYPE_DELETE_REPLICA_TARGET_DISK_SNAPSHOTS,
})
