"""The contract between the conductor and the workers, whatever carries the messages.

Conductor → worker: ``TaskBus.dispatch`` (run a task), ``TaskBus.cancel``, and
``TaskBus.call`` (a synchronous endpoint operation such as listing instances, run on a worker
because the API and conductor never run provider code themselves).
Worker → conductor: the ``TaskEventSink`` methods. The conductor is the only writer of
execution state; workers only report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class EndpointRef:
    """Everything a worker needs to talk to one endpoint (connection info decrypted)."""

    platform: str
    connection_info: dict[str, Any]
    environment: dict[str, Any] = field(default_factory=dict)
    project_id: str | None = None  # the endpoint's project (what it may reach depends on it)


@dataclass
class TaskMessage:
    task_id: str
    execution_id: str
    task_type: str
    instance: str
    origin: EndpointRef
    destination: EndpointRef
    task_info: dict[str, Any]


class TaskEventSink(Protocol):
    """Implemented by the conductor."""

    def task_started(self, task_id: str, host: str, process_id: int) -> None: ...

    def task_progress(
        self, task_id: str, current_step: int, total_steps: int | None, message: str
    ) -> None:
        """A progress update; the same message with new numbers updates the last entry."""
        ...

    def task_event(self, task_id: str, level: str, message: str) -> None: ...

    def task_completed(self, task_id: str, result: dict[str, Any]) -> None:
        """``result`` is merged into the instance's task_info."""
        ...

    def task_failed(self, task_id: str, error: str) -> None: ...

    def task_canceled(self, task_id: str, forced: bool) -> None: ...


class TaskBus(Protocol):
    """Implemented by each transport."""

    def dispatch(self, message: TaskMessage, host: str) -> None:
        """Send the task to worker ``host`` (chosen by the conductor's placement)."""
        ...

    def cancel(self, task_id: str, force: bool) -> None: ...

    def call(
        self, operation: str, endpoint: EndpointRef, timeout: float = 120.0, *, host: str,
        **kwargs: Any
    ) -> Any:
        """Run provider method ``operation`` (e.g. ``list_instances``) on worker ``host`` and
        return its result; provider exceptions are re-raised as they are."""
        ...
