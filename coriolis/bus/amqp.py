"""The scale-out transport: tasks, endpoint calls, cancels and worker events over RabbitMQ
(kombu), between separate conductor, API and worker processes.

Queues (all names under the deployment's namespace ``NS``):
- ``NS.worker.HOST`` (durable): tasks for one worker, chosen by the conductor's placement.
- ``NS.calls.HOST``: synchronous endpoint operations (listings, validation) for one worker;
  each message expires with its caller's timeout, and the answer goes to the caller's own
  exclusive reply queue.
- ``NS.events`` (durable): what workers report (started, progress, events, results), consumed
  by the conductor.
- fanout exchange ``NS.cancel``: every worker hears every cancel and acts on its own tasks.

Why workers take tasks with ``basic.get`` and acknowledge them at once: a copy can run for
hours, longer than RabbitMQ's consumer acknowledgement timeout (30 minutes by default), and a
message prefetched while every slot is busy would wait unacknowledged just as long. So a worker
asks for a task only when it has a free slot, and acknowledges it as it starts it. Delivery
after that is the database's business: the task row says which worker has it, and the
conductor takes over the tasks of a worker that stops heart-beating (see
``Conductor.check_workers``), so the broker never redelivers or kills a long task.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from kombu import Connection, Exchange, Producer, Queue
from kombu.message import Message

from coriolis import exceptions
from coriolis.bus.base import EndpointRef, TaskEventSink, TaskMessage

LOG = logging.getLogger(__name__)
POLL_SECONDS = 0.1
SINK_METHODS = frozenset({"task_started", "task_progress", "task_event", "task_completed",
                          "task_failed", "task_canceled"})


class Names:
    """Exchanges and queues of one deployment."""

    def __init__(self, namespace: str) -> None:
        self.ns = namespace
        self.exchange = Exchange(f"{namespace}.direct", type="direct", durable=True)
        self.cancel_exchange = Exchange(f"{namespace}.cancel", type="fanout", durable=False)

    def tasks(self, host: str) -> Queue:
        return Queue(f"{self.ns}.worker.{host}", self.exchange, routing_key=f"worker.{host}",
                     durable=True)

    def calls(self, host: str) -> Queue:
        return Queue(f"{self.ns}.calls.{host}", self.exchange, routing_key=f"calls.{host}",
                     durable=False)

    def events(self) -> Queue:
        return Queue(f"{self.ns}.events", self.exchange, routing_key="events", durable=True)

    def cancels(self, host: str) -> Queue:
        return Queue(f"{self.ns}.cancel.{host}.{uuid.uuid4().hex[:8]}", self.cancel_exchange,
                     exclusive=True, auto_delete=True)

    def replies(self) -> Queue:
        name = f"{self.ns}.reply.{uuid.uuid4().hex}"
        return Queue(name, self.exchange, routing_key=name, exclusive=True, auto_delete=True)


def message_to_json(message: TaskMessage) -> dict[str, Any]:
    return dataclasses.asdict(message)


def message_from_json(body: dict[str, Any]) -> TaskMessage:
    return TaskMessage(**{**body, "origin": EndpointRef(**body["origin"]),
                          "destination": EndpointRef(**body["destination"])})


def error_to_json(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc)}


def error_from_json(error: dict[str, str]) -> exceptions.CoriolisError:
    """Our exceptions keep their class (and so their HTTP status); others become
    ProviderError with their class name."""
    cls = getattr(exceptions, error.get("type", ""), None)
    if isinstance(cls, type) and issubclass(cls, exceptions.CoriolisError):
        return cls(error.get("message", ""))
    return exceptions.ProviderError(f"{error.get('type')}: {error.get('message')}")


class Publisher:
    """One connection shared by a process's threads for sending; kombu connections are not
    thread-safe, so sends take turns. Publishing retries while the broker is away."""

    def __init__(self, url: str) -> None:
        self._conn = Connection(url)
        self._lock = threading.Lock()
        self._producer: Producer | None = None

    def publish(self, body: dict[str, Any], *, exchange: Exchange | str, routing_key: str,
                declare: list[Queue] | None = None, **properties: Any) -> None:
        with self._lock:
            if self._producer is None:
                self._producer = Producer(self._conn.default_channel)
            publish = self._conn.ensure(self._producer, self._producer.publish,
                                        max_retries=30, interval_start=0.2, interval_step=0.5,
                                        interval_max=2)
            publish(body, exchange=exchange, routing_key=routing_key, declare=declare or [],
                    serializer="json", **properties)

    def close(self) -> None:
        with self._lock:
            self._conn.release()


class _Loop:
    """A daemon thread running ``body(connection)`` until stopped, reconnecting after broker
    errors."""

    def __init__(self, url: str, name: str, body: Callable[[Connection, threading.Event], None]
                 ) -> None:
        self._url, self._body, self.stopped = url, body, threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            conn = Connection(self._url)
            try:
                conn.ensure_connection(max_retries=None, interval_start=0.5, interval_max=2)
                self._body(conn, self.stopped)
            except (*conn.connection_errors, *conn.channel_errors, OSError):
                LOG.warning("%s: broker connection lost; reconnecting", self._thread.name,
                            exc_info=True)
                self.stopped.wait(1)
            finally:
                conn.release()

    def stop(self) -> None:
        self.stopped.set()
        self._thread.join(timeout=5)


# ================================================================== conductor / API side
class AmqpBus:
    """``TaskBus`` for the conductor and API processes."""

    def __init__(self, url: str, namespace: str) -> None:
        self.names = Names(namespace)
        self._publisher = Publisher(url)
        self._replies = self.names.replies()
        self._pending: dict[str, Future[Any]] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._reply_loop = _Loop(url, "rpc-replies", self._consume_replies)
        self._reply_loop.start()

    def dispatch(self, message: TaskMessage, host: str) -> None:
        self._publisher.publish(message_to_json(message), exchange=self.names.exchange,
                                routing_key=f"worker.{host}",
                                declare=[self.names.tasks(host)], delivery_mode=2)

    def cancel(self, task_id: str, force: bool) -> None:
        self._publisher.publish({"task_id": task_id, "force": force},
                                exchange=self.names.cancel_exchange, routing_key="",
                                declare=[])

    def call(self, operation: str, endpoint: EndpointRef, timeout: float = 120.0, *,
             host: str, **kwargs: Any) -> Any:
        if not self._ready.wait(timeout):
            raise exceptions.ProviderError("the message broker is not reachable")
        correlation = uuid.uuid4().hex
        future: Future[Any] = Future()
        with self._lock:
            self._pending[correlation] = future
        try:
            self._publisher.publish(
                {"operation": operation, "endpoint": dataclasses.asdict(endpoint),
                 "kwargs": kwargs},
                exchange=self.names.exchange, routing_key=f"calls.{host}",
                declare=[self.names.calls(host)], reply_to=self._replies.name,
                correlation_id=correlation, expiration=timeout)
            try:
                return future.result(timeout)
            except TimeoutError:
                raise exceptions.ProviderError(
                    f"worker {host} did not answer {operation} within {timeout:.0f} s"
                ) from None
        finally:
            with self._lock:
                self._pending.pop(correlation, None)

    def _consume_replies(self, conn: Connection, stopped: threading.Event) -> None:
        def on_reply(body: dict[str, Any], message: Message) -> None:
            with self._lock:
                future = self._pending.get(message.properties.get("correlation_id", ""))
            if future is None:
                return
            if "error" in body:
                future.set_exception(error_from_json(body["error"]))
            else:
                future.set_result(body.get("result"))

        with conn.Consumer(self._replies, callbacks=[on_reply], no_ack=True,
                           accept=["json"]):
            self._ready.set()
            _drain(conn, stopped)

    def shutdown(self) -> None:
        self._reply_loop.stop()
        self._publisher.close()


class EventConsumer:
    """Feeds worker reports from ``NS.events`` to the conductor, acknowledging each once
    applied (a report that fails to apply, the database being away, is retried)."""

    def __init__(self, url: str, namespace: str, sink: TaskEventSink) -> None:
        self._queue = Names(namespace).events()
        self._sink = sink
        self._loop = _Loop(url, "worker-events", self._consume)

    def start(self) -> EventConsumer:
        self._loop.start()
        return self

    def _consume(self, conn: Connection, stopped: threading.Event) -> None:
        def on_event(body: dict[str, Any], message: Message) -> None:
            kind = body.get("kind")
            if kind not in SINK_METHODS:
                LOG.warning("dropping an unknown worker report %r", kind)
                message.ack()
                return
            try:
                getattr(self._sink, kind)(**body.get("args", {}))
            except Exception:
                LOG.exception("could not apply worker report %s; retrying", kind)
                stopped.wait(1)
                message.requeue()
                return
            message.ack()

        with conn.Consumer(self._queue, callbacks=[on_event], accept=["json"],
                           prefetch_count=32):
            _drain(conn, stopped)

    def stop(self) -> None:
        self._loop.stop()


def _drain(conn: Connection, stopped: threading.Event) -> None:
    while not stopped.is_set():
        try:
            conn.drain_events(timeout=1)
        except TimeoutError:
            conn.heartbeat_check()


# ================================================================== worker side
class EventPublisher:
    """``TaskEventSink`` for a worker process: every report goes to ``NS.events``."""

    def __init__(self, publisher: Publisher, names: Names) -> None:
        self._publisher, self._names = publisher, names

    def _send(self, kind: str, **args: Any) -> None:
        self._publisher.publish({"kind": kind, "args": args}, exchange=self._names.exchange,
                                routing_key="events", declare=[self._names.events()],
                                delivery_mode=2)

    def task_started(self, task_id: str, host: str, process_id: int) -> None:
        self._send("task_started", task_id=task_id, host=host, process_id=process_id)

    def task_progress(self, task_id: str, current_step: int, total_steps: int | None,
                      message: str) -> None:
        self._send("task_progress", task_id=task_id, current_step=current_step,
                   total_steps=total_steps, message=message)

    def task_event(self, task_id: str, level: str, message: str) -> None:
        self._send("task_event", task_id=task_id, level=level, message=message)

    def task_completed(self, task_id: str, result: dict[str, Any]) -> None:
        self._send("task_completed", task_id=task_id, result=result)

    def task_failed(self, task_id: str, error: str) -> None:
        self._send("task_failed", task_id=task_id, error=error)

    def task_canceled(self, task_id: str, forced: bool) -> None:
        self._send("task_canceled", task_id=task_id, forced=forced)


def _take(queue: Queue, slots: threading.BoundedSemaphore) -> Message | None:
    """One message from ``queue`` if a slot is free (the slot is then the message's, to be
    released when its work ends), acknowledged at once: see the module docstring."""
    if not slots.acquire(blocking=False):
        return None
    message = queue.get(no_ack=True, accept=["json"])
    if message is None:
        slots.release()
    return message


TaskHandler = Callable[[TaskMessage, threading.Event], None]
CallHandler = Callable[[str, EndpointRef, dict[str, Any]], Any]


class WorkerServer:
    """Takes this worker's tasks and calls from the broker when it has free slots (see the
    module docstring), answers calls, and sets the cancel flag of its running tasks."""

    def __init__(self, url: str, namespace: str, host: str, max_tasks: int,
                 run_task: TaskHandler, run_call: CallHandler,
                 accept_task: Callable[[str], bool], max_calls: int = 4) -> None:
        self.names = Names(namespace)
        self.host = host
        self.publisher = Publisher(url)
        self._run_task, self._run_call, self._accept = run_task, run_call, accept_task
        self._task_slots = threading.BoundedSemaphore(max_tasks)
        self._call_slots = threading.BoundedSemaphore(max_calls)
        self._flags: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._loop = _Loop(url, f"worker-{host}", self._serve)
        self._ready = threading.Event()

    def start(self) -> WorkerServer:
        self._loop.start()
        return self

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def _serve(self, conn: Connection, stopped: threading.Event) -> None:
        channel = conn.channel()
        tasks = self.names.tasks(self.host).bind(channel)
        calls = self.names.calls(self.host).bind(channel)
        cancels = self.names.cancels(self.host).bind(channel)
        for q in (tasks, calls, cancels):
            q.declare()
        self._ready.set()
        while not stopped.is_set():
            busy = False
            cancel = cancels.get(no_ack=True, accept=["json"])
            if cancel is not None:
                busy = True
                self._on_cancel(cancel.payload)
            call = _take(calls, self._call_slots)
            if call is not None:
                busy = True
                self._start_thread(self._call, call.payload, call.properties.get("reply_to"),
                                   call.properties.get("correlation_id"))
            task = _take(tasks, self._task_slots)
            if task is not None:
                busy = True
                self._start_thread(self._task, task.payload)
            if not busy:
                stopped.wait(POLL_SECONDS)
                conn.heartbeat_check()

    @staticmethod
    def _start_thread(target: Callable[..., None], *args: Any) -> None:
        threading.Thread(target=target, args=args, daemon=True).start()

    def _on_cancel(self, body: dict[str, Any]) -> None:
        with self._lock:
            flag = self._flags.get(body.get("task_id", ""))
        if flag is not None:
            flag.set()

    def _task(self, body: dict[str, Any]) -> None:
        try:
            message = message_from_json(body)
            if not self._accept(message.task_id):
                LOG.warning("dropping task %s: it is no longer this worker's",
                            message.task_id)
                return
            flag = threading.Event()
            with self._lock:
                self._flags[message.task_id] = flag
            try:
                self._run_task(message, flag)
            finally:
                with self._lock:
                    self._flags.pop(message.task_id, None)
        except Exception:
            LOG.exception("task message could not be run")
        finally:
            self._task_slots.release()

    def _call(self, body: dict[str, Any], reply_to: str | None,
              correlation_id: str | None) -> None:
        try:
            try:
                result: dict[str, Any] = {"result": self._run_call(
                    body["operation"], EndpointRef(**body["endpoint"]), body.get("kwargs", {}))}
            except Exception as exc:
                if not isinstance(exc, exceptions.CoriolisError):
                    LOG.exception("endpoint call %s crashed", body.get("operation"))
                result = {"error": error_to_json(exc)}
            if reply_to:
                self.publisher.publish(result, exchange=self.names.exchange,
                                       routing_key=reply_to, correlation_id=correlation_id)
        finally:
            self._call_slots.release()

    def stop(self) -> None:
        self._loop.stop()
        with self._lock:
            for flag in self._flags.values():
                flag.set()
        self.publisher.close()
