"""A daemon thread that calls a function every few seconds until stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger(__name__)


class Periodic:
    """Calls ``fn()`` every ``interval`` seconds (the first call after one interval); an
    exception is logged and the next call happens as planned."""

    def __init__(self, name: str, interval: float, fn: Callable[[], Any]) -> None:
        self.name, self.interval, self._fn = name, interval, fn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Periodic:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._fn()
            except Exception:
                LOG.exception("%s failed; trying again in %s s", self.name, self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
