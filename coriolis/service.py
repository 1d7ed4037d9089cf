"""Wiring of the deployments: one engine, two transports.

- all-in-one: API, conductor, replica cron and one worker in one process; SQLite and the
  in-process bus.
- scale-out: ``api``, ``conductor`` and ``scheduler`` processes (PostgreSQL, RabbitMQ through
  ``bus.amqp``) and any number of ``worker`` processes (``run_worker``).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import select

from coriolis import constants as c
from coriolis.bus.inprocess import InProcessBus
from coriolis.config import ConfigError, Settings
from coriolis.db import models
from coriolis.db.session import Database
from coriolis.engine.conductor import Conductor
from coriolis.minions.manager import PoolManager
from coriolis.periodic import Periodic
from coriolis.providers import registry
from coriolis.scheduling import pool_upkeep
from coriolis.scheduling.replica_cron import ReplicaCron
from coriolis.secrets.barbican import BarbicanSecrets
from coriolis.secrets.box import SecretBox
from coriolis.worker import registration
from coriolis.worker.service import Worker

LOG = logging.getLogger(__name__)
Role = Literal["api", "conductor", "scheduler"]

# Threads that use the database, which size its connection pool (db.session.Database):
API_THREADS = 40  # request threads of the API server (cmd.server sets anyio's limiter to it)
BACKGROUND_THREADS = 4  # heartbeat, worker monitor, replica cron / event consumer, main


@dataclass
class Services:
    settings: Settings
    db: Database
    box: SecretBox
    conductor: Conductor
    closers: list[Callable[[], None]] = field(default_factory=list)
    barbican: BarbicanSecrets | None = None  # connection info in a real Barbican
    pools: PoolManager = field(init=False)

    def __post_init__(self) -> None:
        self.pools = self.conductor.pools

    @staticmethod
    def providers() -> dict[str, int]:
        """Every worker runs this same code, so it carries the providers installed here."""
        return registry.platforms()

    def close(self) -> None:
        for close in reversed(self.closers):
            close()
        self.db.dispose()


def _open_state(settings: Settings, threads: int,
                create_schema: bool = True) -> tuple[Database, SecretBox]:
    settings.make_data_dir()
    assert settings.database_url is not None
    db = Database(settings.database_url, threads=threads)
    if create_schema:
        db.create_schema()
    return db, SecretBox.from_key_file(settings.secret_key_file)


def barbican_secrets(settings: Settings) -> BarbicanSecrets | None:
    if settings.barbican is None:
        return None
    if settings.keystone is None:
        raise ConfigError("[barbican] needs [keystone]: secrets are read with Keystone tokens")
    return BarbicanSecrets(settings.barbican, settings.keystone)


def build_all_in_one(settings: Settings) -> Services:
    """API, conductor, replica cron and the in-process worker. The worker's heartbeat row is
    kept for the listings; placement counts this worker up as long as the process runs."""
    db, box = _open_state(settings, API_THREADS + settings.workers + InProcessBus.CALL_THREADS
                          + BACKGROUND_THREADS)
    worker = Worker(socket.gethostname(), settings.data_dir / "worker", settings)
    service_id = registration.register(db, worker.host, "in-process", worker.providers(),
                                       settings.workers)
    bus = InProcessBus(worker, max_workers=settings.workers)
    barbican = barbican_secrets(settings)
    conductor = Conductor(db, box, bus, worker_down_after=settings.worker_down_after,
                          local_host=worker.host, barbican=barbican)
    bus.set_event_sink(conductor)
    heartbeat = Periodic("heartbeat", settings.heartbeat_interval,
                         lambda: registration.beat(db, service_id)).start()
    conductor.start()
    monitor = Periodic("worker-monitor", settings.heartbeat_interval,
                       conductor.check_workers).start()
    cron = ReplicaCron(db, conductor)
    cron.start()
    upkeep = pool_upkeep.start(conductor.pools, settings)
    return Services(settings, db, box, conductor,
                    [bus.shutdown, heartbeat.stop, monitor.stop, cron.stop, upkeep.stop],
                    barbican)


def _transport_url(settings: Settings) -> str:
    if not settings.transport_url:
        raise SystemExit("error: the scale-out mode needs a broker: --transport-url or "
                         "CORIOLIS_TRANSPORT_URL (e.g. amqp://guest:guest@127.0.0.1:5672//)")
    return settings.transport_url


def build_distributed(settings: Settings, role: Role) -> Services:
    """The API, conductor or scheduler process of the scale-out mode. Every one of them can
    start executions (the API on request, the scheduler on schedule, the conductor as tasks
    end); only the conductor applies worker reports and watches heartbeats."""
    from coriolis.bus.amqp import AmqpBus, EventConsumer

    url = _transport_url(settings)
    db, box = _open_state(settings, (API_THREADS if role == "api" else 0) + BACKGROUND_THREADS)
    bus = AmqpBus(url, settings.bus_namespace)
    barbican = barbican_secrets(settings)
    conductor = Conductor(db, box, bus, worker_down_after=settings.worker_down_after,
                          barbican=barbican)
    services = Services(settings, db, box, conductor, [bus.shutdown], barbican)
    if role == "conductor":
        conductor.start()
        events = EventConsumer(url, settings.bus_namespace, conductor).start()
        monitor = Periodic("worker-monitor", settings.heartbeat_interval,
                           conductor.check_workers).start()
        upkeep = pool_upkeep.start(conductor.pools, settings)
        services.closers += [events.stop, monitor.stop, upkeep.stop]
    elif role == "scheduler":
        cron = ReplicaCron(db, conductor)
        cron.start()
        services.closers.append(cron.stop)
    return services


def run_worker(settings: Settings, host: str, max_tasks: int,
               stop: threading.Event) -> None:
    """A worker process of the scale-out mode, until ``stop`` is set: registers as service
    ``host``, heart-beats, runs the tasks and endpoint calls the broker brings it."""
    from coriolis.bus.amqp import EventPublisher, WorkerServer

    url = _transport_url(settings)
    db, _box = _open_state(settings, max_tasks + BACKGROUND_THREADS, create_schema=False)
    worker = Worker(host, settings.data_dir / "worker" / host, settings)

    def accept(task_id: str) -> bool:
        """A task taken over from this worker while it was away is no longer its own."""
        with db.session() as session:
            task = session.scalar(select(models.Task).where(models.Task.id == task_id))
            return task is not None and task.host == host and task.status in (
                c.TASK_STATUS_STARTING, c.TASK_STATUS_PENDING)

    server = WorkerServer(
        url, settings.bus_namespace, host, max_tasks,
        run_task=lambda message, flag: worker.run_task(message, sink, flag),
        run_call=lambda operation, ref, kwargs: worker.call(operation, ref, **kwargs),
        accept_task=accept)
    sink = EventPublisher(server.publisher, server.names)
    service_id = registration.register(db, host, server.names.tasks(host).name,
                                       worker.providers(), max_tasks)
    heartbeat = Periodic("heartbeat", settings.heartbeat_interval,
                         lambda: registration.beat(db, service_id)).start()
    server.start()
    if not server.wait_ready(60):
        LOG.warning("worker %s: the broker is not reachable yet; still trying", host)
    LOG.info("worker %s ready (%d concurrent tasks)", host, max_tasks)
    print(f"coriolis worker {host} ready", flush=True)
    try:
        stop.wait()
    finally:
        heartbeat.stop()
        server.stop()
        db.dispose()
