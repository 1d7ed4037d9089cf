"""Wiring of the embedded (all-in-one) deployment: one process, SQLite, in-process bus."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from coriolis.bus.inprocess import InProcessBus
from coriolis.config import Settings
from coriolis.db.session import Database
from coriolis.engine.conductor import Conductor
from coriolis.scheduling.replica_cron import ReplicaCron
from coriolis.secrets.box import SecretBox
from coriolis.worker.service import Worker


@dataclass
class Services:
    settings: Settings
    db: Database
    box: SecretBox
    worker: Worker
    bus: InProcessBus
    conductor: Conductor
    cron: ReplicaCron

    def close(self) -> None:
        self.cron.stop()
        self.bus.shutdown()
        self.conductor.stop()
        self.db.dispose()


def build_all_in_one(settings: Settings) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    assert settings.database_url is not None
    db = Database(settings.database_url)
    db.create_schema()
    box = SecretBox.from_key_file(settings.secret_key_file)
    worker = Worker(socket.gethostname(), settings.data_dir / "worker")
    bus = InProcessBus(worker, max_workers=settings.workers)
    conductor = Conductor(db, box, bus)
    bus.set_event_sink(conductor)
    conductor.start()
    cron = ReplicaCron(db, conductor)
    cron.start()
    return Services(settings, db, box, worker, bus, conductor, cron)
