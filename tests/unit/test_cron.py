"""Schedules in cron syntax (upstream's fields, dow 0 = Monday) and their next run."""

from __future__ import annotations

import datetime as dt

import pytest

from coriolis.scheduling import cron, replica_cron

MON_0952 = dt.datetime(2026, 11, 30, 9, 52)  # a Monday


@pytest.mark.parametrize("schedule, when, expected", [
    ({"minute": "*/5"}, MON_0952.replace(minute=55), True),
    ({"minute": "*/5"}, MON_0952, False),
    ({"minute": "0,30", "hour": "9-17"}, MON_0952.replace(minute=30), True),
    ({"minute": 0, "hour": "9-17/4"}, MON_0952.replace(hour=13, minute=0), True),
    ({"minute": 0, "hour": "9-17/4"}, MON_0952.replace(hour=11, minute=0), False),
    ({"dow": "5-6"}, MON_0952, False),          # weekends only
    ({"dow": 0, "minute": 52}, MON_0952, True),  # 0 is Monday, as upstream
    ({"hour": 9}, MON_0952, True),              # upstream's exact ints still work
])
def test_matches(schedule: dict, when: dt.datetime, expected: bool) -> None:
    assert replica_cron.matches(schedule, when) is expected


def test_next_run() -> None:
    assert cron.next_run({"minute": "*/5"}, MON_0952) == MON_0952.replace(minute=55)
    # weekdays 09:00: from Saturday to Monday
    saturday = dt.datetime(2026, 12, 5, 10, 0)
    assert cron.next_run({"minute": 0, "hour": 9, "dow": "0-4"}, saturday) == \
        dt.datetime(2026, 12, 7, 9, 0)
    assert cron.next_run({"dom": 31, "month": 2}, saturday) is None  # never


@pytest.mark.parametrize("schedule, field", [
    ({"minute": "*/0"}, "minute"), ({"hour": "24"}, "hour"), ({"dom": 0}, "dom"),
    ({"month": "1-13"}, "month"), ({"dow": "7"}, "dow"), ({"minute": "5-1"}, "minute"),
    ({"hour": "x"}, "hour"), ({"dow": True}, "dow"),
])
def test_invalid_fields_are_named(schedule: dict, field: str) -> None:
    with pytest.raises(cron.CronError, match=f"^{field}: "):
        cron.validate(schedule)
    assert replica_cron.matches(schedule, MON_0952) is False
