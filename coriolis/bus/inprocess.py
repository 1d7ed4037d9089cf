"""The embedded transport: tasks run on a thread pool of this process's worker (the only
one, so the ``host`` the conductor chose is always it)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from coriolis.bus.base import EndpointRef, TaskEventSink, TaskMessage
from coriolis.worker.service import Worker


class InProcessBus:
    # Endpoint calls get their own pool so that listings never wait behind long copies.
    CALL_THREADS = 4

    def __init__(self, worker: Worker, max_workers: int = 4) -> None:
        self.worker = worker
        self._tasks = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="task")
        self._calls = ThreadPoolExecutor(max_workers=self.CALL_THREADS,
                                         thread_name_prefix="call")
        self._cancel_flags: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._sink: TaskEventSink | None = None

    def set_event_sink(self, sink: TaskEventSink) -> None:
        self._sink = sink

    def dispatch(self, message: TaskMessage, host: str) -> None:
        if self._sink is None:
            raise RuntimeError("no event sink attached to the bus")
        flag = threading.Event()
        with self._lock:
            self._cancel_flags[message.task_id] = flag
        sink = self._sink

        def run() -> None:
            try:
                self.worker.run_task(message, sink, flag)
            finally:
                with self._lock:
                    self._cancel_flags.pop(message.task_id, None)

        self._tasks.submit(run)

    def running_tasks(self) -> set[str]:
        """Ids of the tasks dispatched here whose run has not ended (its end reported or
        not): the conductor takes over the others it still believes running."""
        with self._lock:
            return set(self._cancel_flags)

    def cancel(self, task_id: str, force: bool) -> None:
        with self._lock:
            flag = self._cancel_flags.get(task_id)
        if flag is not None:
            flag.set()

    def call(self, operation: str, endpoint: EndpointRef, timeout: float = 120.0, *,
             host: str, **kwargs: Any) -> Any:
        return self._calls.submit(self.worker.call, operation, endpoint, **kwargs).result(timeout)

    def shutdown(self) -> None:
        with self._lock:
            for flag in self._cancel_flags.values():
                flag.set()
        self._tasks.shutdown(wait=True, cancel_futures=True)
        self._calls.shutdown(wait=True, cancel_futures=True)
