"""The execution state machine, as pure functions over task records.

``advance`` is called after every transition: it says which tasks change status (skipped ones,
cleanups promoted) and which are ready to run. ``execution_status`` derives the execution's
status from its tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coriolis import constants as c

# For dependency purposes a cleanup that was never needed (still EXECUTE_ON_ERROR_ONLY) is done.
_SETTLED = c.FINAL_TASK_STATUSES | {c.TASK_STATUS_ON_ERROR_ONLY}
_FAILED = {c.TASK_STATUS_ERROR, c.TASK_STATUS_FAILED_TO_SCHEDULE, c.TASK_STATUS_FAILED_TO_CANCEL}


@dataclass
class TaskState:
    id: str
    status: str
    depends_on: list[str] = field(default_factory=list)
    on_error: bool = False
    on_error_only: bool = False


@dataclass
class Advance:
    changes: dict[str, str] = field(default_factory=dict)
    ready: list[str] = field(default_factory=list)


def advance(tasks: list[TaskState], cancelling: bool = False) -> Advance:
    """Resolve every SCHEDULED task whose parents are all settled, to a fixed point.

    - A normal task runs when all its parents COMPLETED and the execution is not being
      cancelled; otherwise it is UNSCHEDULED (or CANCELED when cancelling).
    - A cleanup (``on_error``, or a promoted ``on_error_only``) runs once its parents are
      settled if at least one of them COMPLETED (there is something to clean), else UNSCHEDULED.
    - When a task failed or the execution is cancelling, ``on_error_only`` tasks are promoted.
    """
    status = {t.id: t.status for t in tasks}
    result = Advance()

    def set_status(task_id: str, value: str) -> None:
        status[task_id] = value
        result.changes[task_id] = value

    failing = cancelling or any(s in _FAILED for s in status.values())
    if failing:
        for t in tasks:
            if status[t.id] == c.TASK_STATUS_ON_ERROR_ONLY:
                set_status(t.id, c.TASK_STATUS_SCHEDULED)

    changed = True
    while changed:
        changed = False
        for t in tasks:
            if status[t.id] != c.TASK_STATUS_SCHEDULED:
                continue
            parents = [status[p] for p in t.depends_on]
            if any(p not in _SETTLED for p in parents):
                continue
            completed = [p == c.TASK_STATUS_COMPLETED for p in parents]
            if t.on_error or t.on_error_only:
                ok = not parents or any(completed)
                skipped = c.TASK_STATUS_UNSCHEDULED
            else:
                ok = all(completed) and not cancelling
                skipped = c.TASK_STATUS_CANCELED if cancelling else c.TASK_STATUS_UNSCHEDULED
            if ok:
                set_status(t.id, c.TASK_STATUS_PENDING)
                result.ready.append(t.id)
            else:
                set_status(t.id, skipped)
                changed = True
    return result


def execution_status(statuses: list[str], cancelling: bool = False) -> str:
    """Derived execution status (server-contract §3.2)."""
    active = any(s in c.ACTIVE_TASK_STATUSES for s in statuses)
    if active:
        return c.EXECUTION_STATUS_CANCELLING if cancelling else c.EXECUTION_STATUS_RUNNING
    if any(s == c.TASK_STATUS_SCHEDULED for s in statuses):
        return c.EXECUTION_STATUS_DEADLOCKED
    if any(s in _FAILED for s in statuses):
        return c.EXECUTION_STATUS_ERROR
    if cancelling or any(s in c.CANCELED_TASK_STATUSES for s in statuses):
        return c.EXECUTION_STATUS_CANCELED
    return c.EXECUTION_STATUS_COMPLETED
