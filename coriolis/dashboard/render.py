"""Pure helpers that turn the API's views (``coriolis.api.views``) into what the dashboard's
templates show: progress bars with rate and ETA, human sizes and durations, status classes,
schedules as cron fields. No database, no request: unit-tested on plain dicts."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from coriolis import constants as c

MiB = 1024 * 1024
# The rate a disk copy's progress message states ("..., 12.5 MiB/s"; worker/tasks.py).
RATE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*MiB/s")
# A disk's progress updates are "Disk ID: ..." (worker/tasks.py); their steps are bytes.
DISK_RE = re.compile(r"^Disk (?P<disk>[^:]+):")

STATUS_CLASSES = {
    c.EXECUTION_STATUS_COMPLETED: "ok",
    c.EXECUTION_STATUS_RUNNING: "running",
    c.EXECUTION_STATUS_CANCELLING: "running",
    c.EXECUTION_STATUS_AWAITING_MINION_ALLOCATIONS: "running",
    c.TASK_STATUS_PENDING: "running",
    c.TASK_STATUS_STARTING: "running",
    c.TASK_STATUS_CANCELLING_AFTER_COMPLETION: "running",
    c.EXECUTION_STATUS_ERROR: "error",
    c.EXECUTION_STATUS_DEADLOCKED: "error",
    c.EXECUTION_STATUS_ERROR_ALLOCATING_MINIONS: "error",
    c.TASK_STATUS_FAILED_TO_SCHEDULE: "error",
    c.TASK_STATUS_FAILED_TO_CANCEL: "error",
    "ALLOCATED": "ok",
    "IN_USE": "running",
}


def status_class(status: str | None) -> str:
    """The CSS class of a status badge: ``ok``, ``running``, ``error`` or ``idle``."""
    return STATUS_CLASSES.get(status or "", "idle")


def is_active(status: str | None) -> bool:
    """Whether an execution with this status may still change (so may be cancelled)."""
    return status in c.ACTIVE_EXECUTION_STATUSES


def parse_ts(value: str | None) -> dt.datetime | None:
    """A view's timestamp (``views.ts``: naive UTC, ``%Y-%m-%dT%H:%M:%S.%f``)."""
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None


def human_bytes(count: float) -> str:
    """``1536`` -> ``1.5 KiB``; binary units, one decimal above bytes."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float | None) -> str:
    """``75`` -> ``1:15``, ``3725`` -> ``1:02:05``; ``None`` (unknown) -> ``–``."""
    if seconds is None or seconds < 0:
        return "–"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class ProgressBar:
    """One progress update as a bar. ``percent`` is floored (100 only when done); for a disk
    (``is_disk``) ``done``/``total`` are bytes and ``rate`` bytes per second, ``eta`` seconds."""

    label: str
    message: str
    done: int
    total: int | None
    percent: int | None
    is_disk: bool
    rate: float | None = None
    eta: float | None = None

    @property
    def finished(self) -> bool:
        return self.percent == 100

    @property
    def summary(self) -> str:
        """``42 % · 40.0 MiB of 96.0 MiB · 12.5 MiB/s · ETA 0:04`` (the parts known)."""
        parts = [f"{self.percent} %"] if self.percent is not None else []
        if self.is_disk and self.total:
            parts.append(f"{human_bytes(self.done)} of {human_bytes(self.total)}")
        elif self.total:
            parts.append(f"step {self.done} of {self.total}")
        if self.rate and not self.finished:
            parts.append(f"{human_bytes(self.rate)}/s")
            parts.append(f"ETA {human_duration(self.eta)}")
        return " · ".join(parts)


def progress_bar(update: dict[str, Any]) -> ProgressBar:
    """A ``views.progress_update`` as a bar. The rate is the one the message states, else
    the average since the update was created (its steps over ``updated_at - created_at``);
    the ETA is what remains at that rate."""
    message = update.get("message") or ""
    done = int(update.get("current_step") or 0)
    total = update.get("total_steps")
    total = int(total) if total else None
    percent = None
    if total:
        percent = 100 if done >= total else max(0, min(99, done * 100 // total))
    disk = DISK_RE.match(message)
    label = f"Disk {disk.group('disk')}" if disk else (message.split(":")[0] or "Progress")
    bar = ProgressBar(label=label, message=message, done=done, total=total, percent=percent,
                      is_disk=disk is not None)
    if disk is None or total is None or done >= total:
        return bar
    stated = RATE_RE.search(message)
    if stated:
        bar.rate = float(stated.group(1)) * MiB
    else:
        start, end = parse_ts(update.get("created_at")), parse_ts(update.get("updated_at"))
        if start and end and end > start and done:
            bar.rate = done / (end - start).total_seconds()
    if bar.rate:
        bar.eta = (total - done) / bar.rate
    return bar


def task_bars(task: dict[str, Any]) -> list[ProgressBar]:
    """A task's bars, one per label (its latest update: a disk's summary replaces its
    scanning bar), in the order the labels first appeared."""
    latest: dict[str, ProgressBar] = {}
    for update in sorted(task.get("progress_updates") or [], key=lambda u: u.get("index", 0)):
        bar = progress_bar(update)
        latest[bar.label] = bar
    return list(latest.values())


@dataclass
class InstanceView:
    name: str
    tasks: list[dict[str, Any]] = field(default_factory=list)
    bars: list[ProgressBar] = field(default_factory=list)


def execution_view(execution: dict[str, Any], max_events: int = 100) -> dict[str, Any]:
    """A ``views.execution`` (with tasks) for the live page: ``instances`` (their tasks in
    order, and the progress bars of their tasks), ``events`` (of all tasks, oldest first,
    the last ``max_events``, each with its task type and instance), ``errors`` (the failed
    tasks' messages) and ``active`` (whether it may still change)."""
    instances: dict[str, InstanceView] = {}
    events: list[dict[str, Any]] = []
    errors: list[str] = []
    tasks = sorted(execution.get("tasks") or [], key=lambda t: t.get("index", 0))
    # Tasks of one type that run more than once for an instance (the replication passes of
    # a migration: REPLICATE_DISKS twice) number their bars: "Disk disk0, pass 2".
    repeated = Counter((t["instance"], t["task_type"]) for t in tasks)
    passes: Counter[tuple[str, str]] = Counter()
    for task in tasks:
        view = instances.setdefault(task["instance"], InstanceView(task["instance"]))
        view.tasks.append(task)
        key = (task["instance"], task["task_type"])
        passes[key] += 1
        for bar in task_bars(task):
            if repeated[key] > 1:
                bar.label = f"{bar.label}, pass {passes[key]}"
            view.bars.append(bar)
        for event in task.get("events") or []:
            events.append({**event, "task_type": task["task_type"],
                           "instance": task["instance"]})
        if task.get("status") == c.TASK_STATUS_ERROR and task.get("exception_details"):
            errors.append(f"{task['task_type']} ({task['instance']}): "
                          f"{task['exception_details']}")
    events.sort(key=lambda e: (e.get("created_at") or "", e.get("index", 0)))
    return {"id": execution["id"], "status": execution.get("status"),
            "number": execution.get("number"), "type": execution.get("type"),
            "action_id": execution.get("action_id"),
            "active": is_active(execution.get("status")),
            "instances": list(instances.values()), "events": events[-max_events:],
            "errors": errors}


CRON_FIELDS = ("minute", "hour", "dom", "month", "dow")


def schedule_text(schedule: dict[str, Any] | None) -> str:
    """A replica schedule (``{"hour": 2, "minute": 0}``; any field may hold a cron string
    such as ``*/5``) as the five cron fields, ``*`` for absent ones: ``0 2 * * *``."""
    schedule = schedule or {}
    return " ".join("*" if schedule.get(name) is None else str(schedule[name])
                    for name in CRON_FIELDS)


def short_id(value: str | None) -> str:
    """The first 8 characters of an id (the full one goes in a ``title``)."""
    return (value or "")[:8]
