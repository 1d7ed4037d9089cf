"""`--wait` and the `wait` commands: follow an operation until it ends, showing its progress.

The display goes to stderr, so that stdout keeps the command's usual `-f/-c` output (the
final state of what was waited on) for scripts. On a terminal it is a live rich display, one
line per task and one progress bar per disk (bytes done of total, rate, ETA); otherwise one
plain line per change (a task's new status, a progress update's new value, a new event), each
with the time the server recorded it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from coriolisclient.cli.utils import CLIError
from coriolisclient.v1 import waiter

MiB = 1024 * 1024


def add_wait_options(parser: argparse.ArgumentParser, default: bool = False) -> None:
    """``--wait`` (unless the command always waits) and ``--wait-interval/--wait-timeout``."""
    if not default:
        parser.add_argument("--wait", action="store_true",
                            help="Wait until the operation ends, showing its progress on "
                                 "stderr; exit 1 with the failing task's message if it "
                                 "ends in ERROR or is cancelled")
    parser.add_argument("--wait-interval", type=float, default=2.0, metavar="SECONDS",
                        help="Seconds between two polls while waiting (default 2)")
    parser.add_argument("--wait-timeout", type=float, default=None, metavar="SECONDS",
                        help="Give up waiting after this many seconds (exit 1); "
                             "default: wait as long as it runs")


def _update_key(task: dict[str, Any], update: dict[str, Any]) -> str:
    return f"{task.get('id')}/{update.get('index', 0)}"


def _when(item: dict[str, Any]) -> str:
    return str(item.get("updated_at") or item.get("created_at") or "")


def _percent(update: dict[str, Any]) -> str:
    current, total = update.get("current_step"), update.get("total_steps")
    if current is not None and total:
        return f"[{current * 100 / total:.0f}%] "
    return ""


class PlainReporter:
    """One line per change, e.g. ``2026-12-01T03:40:02 vm1 REPLICATE_DISKS RUNNING``."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.seen: dict[str, Any] = {}

    def _emit(self, key: str, value: Any, line: str) -> None:
        if self.seen.get(key) != value:
            self.seen[key] = value
            self.stream.write(line + "\n")
            self.stream.flush()

    def update(self, resource: Any, status: str | None) -> None:
        self._emit("status", status, f"status: {status}")
        for task in getattr(resource, "tasks", None) or []:
            who = f"{task.get('instance')} {task.get('task_type')}"
            self._emit(f"{task.get('id')}/status", task.get("status"),
                       f"{_when(task)} {who} {task.get('status')}")
            for update in task.get("progress_updates") or []:
                self._emit(_update_key(task, update),
                           (update.get("current_step"), update.get("message")),
                           f"{_when(update)} {who} {_percent(update)}{update.get('message')}")
            for event in task.get("events") or []:
                self._emit(f"{task.get('id')}/event/{event.get('index')}", True,
                           f"{_when(event)} {who} {event.get('level')}: "
                           f"{event.get('message')}")
        for event in getattr(resource, "events", None) or []:  # a minion pool's
            self._emit(f"event/{event.get('index')}", True,
                       f"{_when(event)} {event.get('level')}: {event.get('message')}")

    def close(self) -> None:
        pass


class RichReporter:
    """A live rich display: a table of the tasks (instance, task, status, last event) and a
    bar per progress update (per disk) with bytes done of total, rate and ETA."""

    ACTIVE = ("PENDING", "STARTING", "RUNNING", "SCHEDULED", "CANCELLING")

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.bars = Progress(
            TextColumn("{task.description}"), BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"), DownloadColumn(binary_units=True),
            TransferSpeedColumn(), TimeRemainingColumn())
        self.rows: dict[str, Any] = {}
        self.live = Live(self._render(None, []), console=Console(file=stream),
                         refresh_per_second=4)
        self.live.start()

    def _render(self, status: str | None, tasks: list[dict[str, Any]]) -> Any:
        from rich.console import Group
        from rich.table import Table

        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
        for column in ("Instance", "Task", "Status", "Last event"):
            table.add_column(column, overflow="ellipsis", no_wrap=True)
        for task in tasks:
            events = task.get("events") or []
            style = {"COMPLETED": "green", "ERROR": "red", "RUNNING": "yellow"}.get(
                str(task.get("status")), "")
            table.add_row(str(task.get("instance")), str(task.get("task_type")),
                          f"[{style}]{task.get('status')}[/]" if style
                          else str(task.get("status")),
                          str(events[-1].get("message")) if events else "")
        return Group(f"[bold]{status or '...'}[/bold]", table, self.bars)

    def update(self, resource: Any, status: str | None) -> None:
        tasks = getattr(resource, "tasks", None) or []
        for task in tasks:
            for update in task.get("progress_updates") or []:
                total = update.get("total_steps")
                if not total:  # a step without a size: the table's event column says it
                    continue
                key = _update_key(task, update)
                label = f"{task.get('instance')} {str(update.get('message')).split(':')[0]}"
                if key not in self.rows:
                    self.rows[key] = self.bars.add_task(label, total=total)
                self.bars.update(self.rows[key], total=total,
                                 completed=update.get("current_step") or 0)
        self.live.update(self._render(status, tasks))

    def close(self) -> None:
        self.live.stop()


def reporter(stream: TextIO | None = None) -> PlainReporter | RichReporter:
    """The rich display when both stdout and stderr are terminals, else plain lines."""
    stream = stream or sys.stderr
    if sys.stdout.isatty() and stream.isatty():
        try:
            return RichReporter(stream)
        except ImportError:  # rich not installed: plain lines still tell everything
            pass
    return PlainReporter(stream)


def follow(wait: Any, status_of: Any, args: argparse.Namespace) -> Any:
    """Run ``wait(on_update=..., interval=..., timeout=...)`` (a manager's ``wait`` with its
    ids bound), showing progress; return the final resource, or raise a CLIError with the
    failure's reason (exit 1)."""
    shown = reporter()
    try:
        return wait(on_update=lambda r: shown.update(r, status_of(r)),
                    interval=args.wait_interval, timeout=args.wait_timeout)
    except (waiter.OperationFailed, waiter.WaitTimeout) as exc:
        raise CLIError(str(exc)) from None
    finally:
        shown.close()
