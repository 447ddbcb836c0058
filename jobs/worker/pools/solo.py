"""The ``solo`` pool: one job at a time, in the worker's own thread."""

from __future__ import annotations

from jobs.execution import Delivery
from jobs.worker.pools.base import Pool


class SoloPool(Pool):
    """Runs each job in the worker's own thread: simplest, one job at a time."""

    name = "solo"
    #: Its jobs run in the worker's main loop, which waits for each to end.
    blocks_loop = True
    _running = 0

    def submit(self, delivery: Delivery) -> None:
        self._running = 1
        try:
            outcome = self._run(delivery)
        finally:
            self._running = 0
        self.completions.put((delivery.tag, outcome))

    def running(self) -> int:
        return self._running
