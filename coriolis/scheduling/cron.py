"""Schedule fields in cron syntax, with upstream Coriolis's field names and meanings.

A schedule is ``{"minute", "hour", "dom", "month", "dow"}`` (UTC); each field is absent or
``None`` (any value), an int (upstream's exact value), or a cron string: ``*``, ``*/N``,
``A``, ``A-B``, ``A-B/N``, and comma-separated lists of those (``0,30``, ``1-5``,
``9-17/2``). Ranges: minute 0-59, hour 0-23, dom 1-31, month 1-12, dow 0-6 with 0 = Monday
(upstream's numbering, not cron's). As upstream, a time matches when every field does (dom
and dow together, not cron's either-or).
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

FIELDS = {"minute": (0, 59), "hour": (0, 23), "dom": (1, 31), "month": (1, 12),
          "dow": (0, 6)}


class CronError(ValueError):
    """A field that is not valid cron syntax or out of its range (the message names it)."""


@functools.lru_cache(maxsize=1024)
def _parse(field: str, spec: str) -> frozenset[int]:
    low, high = FIELDS[field]
    values: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        base, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if base == "*":
                start, end = low, high
            elif "-" in base:
                a, b = base.split("-", 1)
                start, end = int(a), int(b)
            else:
                start = end = int(base)
                if step_text:  # "5/15": from 5 to the end, every 15
                    end = high
        except ValueError:
            raise CronError(f"{field}: '{spec}' is not cron syntax (*, */N, A, A-B, "
                            "A-B/N, or a comma-separated list of those)") from None
        if step < 1 or not low <= start <= end <= high:
            raise CronError(f"{field}: '{spec}' must stay within {low}-{high} (ranges "
                            "ascending, steps of at least 1)")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def values(field: str, spec: Any) -> frozenset[int]:
    """The values ``spec`` (None, an int or a cron string) allows for ``field``."""
    low, high = FIELDS[field]
    if spec is None:
        return frozenset(range(low, high + 1))
    if isinstance(spec, bool):
        raise CronError(f"{field}: must be a number or a cron string, not a boolean")
    if isinstance(spec, int):
        if not low <= spec <= high:
            raise CronError(f"{field}: {spec} must be between {low} and {high}")
        return frozenset({spec})
    if isinstance(spec, str):
        return _parse(field, spec.strip())
    raise CronError(f"{field}: must be a number or a cron string")


def validate(schedule: dict[str, Any]) -> None:
    """Raise ``CronError`` naming the first invalid field."""
    for field in FIELDS:
        values(field, schedule.get(field))


def matches(schedule: dict[str, Any], when: dt.datetime) -> bool:
    now = {"minute": when.minute, "hour": when.hour, "dom": when.day, "month": when.month,
           "dow": when.weekday()}
    return all(now[f] in values(f, schedule.get(f)) for f in FIELDS)


def next_run(schedule: dict[str, Any], after: dt.datetime,
             horizon_days: int = 366 * 8) -> dt.datetime | None:
    """The first whole minute strictly after ``after`` (naive UTC) that ``schedule``
    matches, or None if none within ``horizon_days`` (e.g. 31 February)."""
    allowed = {f: values(f, schedule.get(f)) for f in FIELDS}
    start = after.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    day = start.date()
    for _ in range(horizon_days):
        if (day.month in allowed["month"] and day.day in allowed["dom"]
                and day.weekday() in allowed["dow"]):
            for hour in sorted(allowed["hour"]):
                for minute in sorted(allowed["minute"]):
                    candidate = dt.datetime(day.year, day.month, day.day, hour, minute)
                    if candidate >= start:
                        return candidate
        day += dt.timedelta(days=1)
    return None
