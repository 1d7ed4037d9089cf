"""A worker: runs tasks (reporting to the conductor) and endpoint operations."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coriolis import exceptions, task_types
from coriolis.bus.base import EndpointRef, TaskEventSink, TaskMessage
from coriolis.config import Settings
from coriolis.minions.steps import STEP_OF_OPERATION
from coriolis.providers import registry
from coriolis.providers.base import OPERATION_CAPABILITY, missing_capability
from coriolis.worker import faults
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
        """Run a provider operation (``providers.base.OPERATION_CAPABILITY``); an operation
        the provider lacks the capability of is ``InvalidInput`` naming both."""
        provider = registry.get_provider(endpoint.platform)
        self.check_location(endpoint)
        capability = OPERATION_CAPABILITY.get(operation)
        if capability is None:
            raise exceptions.InvalidInput(f"unknown endpoint operation '{operation}'")
        missing = missing_capability(provider, capability)
        if missing:
            raise exceptions.InvalidInput(f"{missing} ({operation})")
        method = getattr(provider, operation)
        args = (() if operation in _CONNECTION_ONLY else (endpoint.environment,))
        step = STEP_OF_OPERATION.get(operation)
        try:
            if step is None:
                return method(endpoint.connection_info, *args, **kwargs)
            # A minion pool step: the crash tests' fault hooks (STEP:during|after).
            with faults.running(step, lambda: False):
                result = method(endpoint.connection_info, *args, **kwargs)
            faults.finished(step)
            return result
        except exceptions.CoriolisError:
            raise
        except Exception as exc:
            # What the caller gave (connection info, environment, names) made the provider
            # fail: a 400 naming the operation, never a 500. The message keeps to the error's
            # kind (an OSError's reason, not its file name), as the values may be secrets.
            LOG.exception("%s on a %s endpoint failed", operation, endpoint.platform)
            reason = (exc.strerror if isinstance(exc, OSError) and exc.strerror
                      else redact(str(exc), endpoint.connection_info)[:300])
            raise exceptions.InvalidInput(
                f"connection_info/environment: the {endpoint.platform} provider could not "
                f"{operation.replace('_', ' ')}: {type(exc).__name__}"
                f"{': ' + reason if reason else ''}") from None

    def run_task(self, message: TaskMessage, sink: TaskEventSink,
                 cancel_flag: threading.Event) -> None:
        """Run one task and report its end. A report that fails (the database busy, say) is
        retried; one that never gets through leaves the task for the conductor's recovery,
        which runs it again (the task types safe to re-run: ``task_types.TASK_TYPES``)."""
        if cancel_flag.is_set():
            _report(sink.task_canceled, message.task_id, forced=False)
            return
        sink.task_started(message.task_id, self.host, os.getpid())
        who = f"task {message.task_id} ({message.task_type}, {message.instance})"
        LOG.info("%s started on %s", who, self.host)
        started = time.monotonic()  # the conductor records the start as an event
        runner = TASK_RUNNERS.get(message.task_type)
        try:
            if runner is None:
                raise exceptions.ProviderError(f"no runner for task type {message.task_type}")
            # Only the task's side: a worker may lack the other side's provider.
            for side in task_types.sides(message.task_type):
                self.check_location(message.origin if side == task_types.Side.SOURCE
                                    else message.destination)
            ctx = TaskContext(message, sink, cancel_flag, self.data_dir)
            with faults.running(message.task_type, ctx.cancelled):
                result = runner(ctx)
            faults.finished(message.task_type)
        except exceptions.TaskCanceled:
            LOG.info("%s cancelled after %.1f s", who, time.monotonic() - started)
            _report(sink.task_canceled, message.task_id, forced=False)
        except exceptions.CoriolisError as exc:
            LOG.warning("%s failed after %.1f s: %s", who, time.monotonic() - started, exc)
            _report(sink.task_failed, message.task_id, str(exc))
        except Exception as exc:  # a bug or an unexpected provider error: keep the message
            LOG.exception("%s crashed after %.1f s", who, time.monotonic() - started)
            _report(sink.task_failed, message.task_id, redact(
                f"{type(exc).__name__}: {exc}", message.origin.connection_info,
                message.destination.connection_info))
        else:
            LOG.info("%s finished in %.1f s", who, time.monotonic() - started)
            _report(sink.task_completed, message.task_id, result or {})


REPORT_ATTEMPTS = 5


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def redact(text: str, *connection_infos: Any) -> str:
    """``text`` with every string value of the connection infos (4 characters or more: a
    password, token, key, or a user name or path the user gave) replaced by ``***``, so
    that a provider's error can reach the user with its reason."""
    for secret in sorted({s for info in connection_infos for s in _strings(info)
                          if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _report(send: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """Send a task's final report, retrying with a growing pause (0.2 s to 3.2 s)."""
    for attempt in range(REPORT_ATTEMPTS):
        try:
            send(*args, **kwargs)
            return
        except Exception:
            if attempt == REPORT_ATTEMPTS - 1:
                LOG.exception("could not report the end of task %s; the conductor's recovery "
                              "will run it again", args[0])
                return
            LOG.warning("reporting the end of task %s failed; retrying", args[0],
                        exc_info=True)
            time.sleep(0.2 * 2 ** attempt)
