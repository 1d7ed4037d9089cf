"""A worker: runs tasks (reporting to the conductor) and endpoint operations."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from coriolis import exceptions
from coriolis.bus.base import EndpointRef, TaskEventSink, TaskMessage
from coriolis.config import Settings
from coriolis.providers import registry
from coriolis.worker.tasks import TASK_RUNNERS, TaskContext

LOG = logging.getLogger(__name__)
# Provider operations that take no environment.
_CONNECTION_ONLY = frozenset({"validate_connection"})


class Worker:
    def __init__(self, host: str, data_dir: Path, settings: Settings) -> None:
        self.host = host
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.settings = settings

    def providers(self) -> dict[str, int]:
        return registry.platforms()

    def check_location(self, endpoint: EndpointRef) -> None:
        """What the endpoint reaches is its project's (``LocationNotAllowed`` if not): checked
        on the worker before every call and task, with this host's configuration."""
        if endpoint.project_id is None:
            raise exceptions.LocationNotAllowed(
                "the endpoint reference carries no project; it is refused")
        registry.get_provider(endpoint.platform).check_location(
            endpoint.connection_info, endpoint.project_id, self.settings)

    def call(self, operation: str, endpoint: EndpointRef, **kwargs: Any) -> Any:
        provider = registry.get_provider(endpoint.platform)
        self.check_location(endpoint)
        method = getattr(provider, operation, None)
        if method is None:
            raise exceptions.InvalidInput(
                f"provider '{endpoint.platform}' does not support {operation}")
        args = (() if operation in _CONNECTION_ONLY else (endpoint.environment,))
        try:
            return method(endpoint.connection_info, *args, **kwargs)
        except exceptions.CoriolisError:
            raise
        except Exception as exc:
            # What the caller gave (connection info, environment, names) made the provider
            # fail: a 400 naming the operation, never a 500. The message keeps to the error's
            # kind (an OSError's reason, not its file name), as the values may be secrets.
            LOG.exception("%s on a %s endpoint failed", operation, endpoint.platform)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else ""
            raise exceptions.InvalidInput(
                f"connection_info/environment: the {endpoint.platform} provider could not "
                f"{operation.replace('_', ' ')}: {type(exc).__name__}"
                f"{': ' + reason if reason else ''}") from None

    def run_task(self, message: TaskMessage, sink: TaskEventSink,
                 cancel_flag: threading.Event) -> None:
        if cancel_flag.is_set():
            sink.task_canceled(message.task_id, forced=False)
            return
        sink.task_started(message.task_id, self.host, os.getpid())
        runner = TASK_RUNNERS.get(message.task_type)
        try:
            if runner is None:
                raise exceptions.ProviderError(f"no runner for task type {message.task_type}")
            self.check_location(message.origin)
            self.check_location(message.destination)
            ctx = TaskContext(message, sink, cancel_flag, self.data_dir)
            result = runner(ctx)
        except exceptions.TaskCanceled:
            sink.task_canceled(message.task_id, forced=False)
        except exceptions.CoriolisError as exc:
            sink.task_failed(message.task_id, str(exc))
        except Exception as exc:  # a bug or an unexpected provider error: keep the message
            LOG.exception("task %s (%s) crashed", message.task_id, message.task_type)
            sink.task_failed(message.task_id, f"{type(exc).__name__}: {exc}")
        else:
            sink.task_completed(message.task_id, result or {})

