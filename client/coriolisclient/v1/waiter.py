"""Wait for a migration, deployment, replica/transfer execution or minion pool to finish.

``wait(fetch, status_of)`` polls ``fetch()`` (a manager's ``get``) until ``status_of`` of the
result is final, calling ``on_update`` with each fetched resource, and returns the last one.
An operation that ends in anything but success raises ``OperationFailed`` whose message names
the failing task and its reason (the server's ``exception_details``, secrets already
redacted by the server).

    >>> m = client.migrations.create(...)
    >>> client.migrations.wait(m.id)             # the migration, once COMPLETED
    >>> client.replica_executions.wait(r.id, e.id, timeout=3600)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

# Final statuses of executions (migrations, deployments and replica/transfer executions).
EXECUTION_SUCCESS = frozenset({"COMPLETED"})
EXECUTION_FINAL = frozenset({"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED",
                             "ERROR_ALLOCATING_MINIONS", "CANCELED_FOR_DEBUGGING"})
# Minion pools: a settled pool is ALLOCATED, DEALLOCATED or ERROR.
POOL_SUCCESS = frozenset({"ALLOCATED", "DEALLOCATED"})
POOL_FINAL = POOL_SUCCESS | {"ERROR"}
FAILED_TASK_STATUSES = ("ERROR", "FAILED_TO_SCHEDULE", "FAILED_TO_CANCEL", "CANCELED",
                        "FORCE_CANCELED")


class WaitTimeout(Exception):
    """The operation was still running after ``timeout`` seconds."""


class OperationFailed(Exception):
    """The operation ended in ``status`` (not a success); ``resource`` is its last state."""

    def __init__(self, message: str, status: str, resource: Any) -> None:
        super().__init__(message)
        self.status, self.resource = status, resource


def failure_reason(tasks: list[dict[str, Any]] | None) -> str:
    """The first failed task as ``TASK_TYPE (instance): exception_details``, else ''.
    Errors come before cancellations: a cancelled task is rarely the cause."""
    tasks = tasks or []
    for statuses in (("ERROR", "FAILED_TO_SCHEDULE", "FAILED_TO_CANCEL"),
                     ("CANCELED", "FORCE_CANCELED")):
        for task in tasks:
            if task.get("status") in statuses and task.get("exception_details"):
                return (f"{task.get('task_type')} ({task.get('instance')}): "
                        f"{task['exception_details']}")
    return ""


def wait(fetch: Callable[[], Any], status_of: Callable[[Any], str | None],
         what: str = "operation", final: frozenset[str] = EXECUTION_FINAL,
         success: frozenset[str] = EXECUTION_SUCCESS, interval: float = 2.0,
         timeout: float | None = None,
         on_update: Callable[[Any], None] | None = None,
         reason_of: Callable[[Any], str] | None = None) -> Any:
    """Poll ``fetch()`` every ``interval`` seconds until ``status_of(resource)`` is in
    ``final``; return the resource if that status is in ``success``, else raise
    ``OperationFailed`` (``"<what> ended in ERROR: REPLICATE_DISKS (vm1): reason"``).
    ``timeout`` (seconds, None = forever) raises ``WaitTimeout``. ``reason_of(resource)``
    gives the failure's reason (default: the first failed task's)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        resource = fetch()
        if on_update is not None:
            on_update(resource)
        status = status_of(resource) or ""
        if status in final:
            if status in success:
                return resource
            reason = (reason_of(resource) if reason_of is not None
                      else failure_reason(getattr(resource, "tasks", None)))
            raise OperationFailed(f"{what} ended in {status}"
                                  f"{': ' + reason if reason else ''}", status, resource)
        if deadline is not None and time.monotonic() >= deadline:
            raise WaitTimeout(f"{what} still {status or 'pending'} after {timeout:g} s")
        time.sleep(interval)


def pool_reason(pool: Any) -> str:
    """A minion pool's last ERROR event (its failure's reason), else ''."""
    events = [e for e in (getattr(pool, "events", None) or []) if e.get("level") == "ERROR"]
    return str(events[-1].get("message") or "") if events else ""
