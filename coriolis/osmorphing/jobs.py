"""OS morphing jobs run for a worker on a helper machine (the writer agent's host).

A worker starts a job (a ``MorphRequest`` on disks the helper has), then polls its events
until it is done; each job runs ``morph_in_child`` in a thread of its own, so the morphing
keeps the same isolation as on a worker (a child process of its own session, killed with its
qemu on a cancel or a timeout). A job nobody polled for ``ORPHAN_SECONDS`` (its worker died)
is stopped the same way; a finished job is forgotten once its worker stopped it or after
``KEEP_SECONDS``.

A job's view, as the agent returns it: ``{"id": str, "state": "running" | "done" |
"failed" | "canceled", "error": str | None, "events": [text, ...] (from ``after`` on),
"next": int (the ``after`` of the next poll)}``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from coriolis import exceptions
from coriolis.osmorphing.isolated import MorphRequest, morph_in_child

LOG = logging.getLogger(__name__)
ORPHAN_SECONDS = 60.0
KEEP_SECONDS = 600.0
STOP_WAIT_SECONDS = 60.0


class DiskBusy(Exception):
    """A disk of the request is being morphed by another job."""


class MorphJob:
    def __init__(self, job_id: str, request: MorphRequest) -> None:
        self.id, self.request = job_id, request
        self.events: list[str] = []
        self.state: str = "running"
        self.error: str | None = None
        self.ended_at: float | None = None
        self.last_polled = time.monotonic()
        self._cancel = threading.Event()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"morph-{job_id[:8]}")
        self._thread.start()

    @property
    def paths(self) -> set[str]:
        return {d.path for d in self.request.disks}

    def _stopping(self) -> bool:
        return (self._cancel.is_set()
                or time.monotonic() - self.last_polled > ORPHAN_SECONDS)

    def _log(self, text: str) -> None:
        with self._cond:
            self.events.append(text)
            self._cond.notify_all()

    def _run(self) -> None:
        state, error = "done", None
        try:
            morph_in_child(self.request, self._log, self._stopping)
        except exceptions.TaskCanceled:
            state = "canceled"
            error = ("stopped by its worker" if self._cancel.is_set() else
                     f"stopped: no worker asked for its progress for {ORPHAN_SECONDS:g} s")
        except exceptions.CoriolisError as exc:
            state, error = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - a bug: the worker still gets a reason
            LOG.exception("OS morphing job %s failed", self.id)
            state, error = "failed", f"{type(exc).__name__}: {exc}"
        LOG.info("OS morphing job %s: %s%s", self.id, state, f" ({error})" if error else "")
        with self._cond:
            self.state, self.error, self.ended_at = state, error, time.monotonic()
            self._cond.notify_all()

    def view(self, after: int, wait: float) -> dict[str, Any]:
        """The events from ``after`` on, waiting up to ``wait`` seconds for one or the end."""
        with self._cond:
            self.last_polled = time.monotonic()
            self._cond.wait_for(lambda: len(self.events) > after or self.state != "running",
                                timeout=max(0.0, wait))
            return {"id": self.id, "state": self.state, "error": self.error,
                    "events": self.events[after:], "next": len(self.events)}

    def stop(self, wait: float = STOP_WAIT_SECONDS) -> None:
        """Cancel and wait until the child (and its qemu) is gone."""
        self._cancel.set()
        self._thread.join(wait)


class MorphJobs:
    """The jobs of one agent, by id."""

    def __init__(self) -> None:
        self._jobs: dict[str, MorphJob] = {}
        self._lock = threading.Lock()

    def start(self, job_id: str, request: MorphRequest) -> MorphJob:
        """Start a job; one of the same id (an earlier attempt of the same task) is stopped
        first. ``DiskBusy`` when another job is morphing one of the disks."""
        self.stop(job_id)
        with self._lock:
            self._forget_old()
            for job in self._jobs.values():
                busy = job.paths & {d.path for d in request.disks}
                if busy and job.state == "running":
                    raise DiskBusy(f"disk {sorted(busy)[0]} is being morphed by OS morphing "
                                   f"job {job.id}")
            job = self._jobs[job_id] = MorphJob(job_id, request)
        return job

    def get(self, job_id: str) -> MorphJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def stop(self, job_id: str) -> bool:
        """Stop a job and forget it; False when there was none."""
        with self._lock:
            job = self._jobs.pop(job_id, None)
        if job is not None:
            job.stop()
        return job is not None

    def stop_all(self) -> None:
        with self._lock:
            jobs, self._jobs = list(self._jobs.values()), {}
        for job in jobs:
            job.stop()

    def _forget_old(self) -> None:
        now = time.monotonic()
        for job_id in [j.id for j in self._jobs.values()
                       if j.ended_at is not None and now - j.ended_at > KEEP_SECONDS]:
            del self._jobs[job_id]
