"""The ``solo`` pool: one job at a time, in the worker's own thread."""

from __future__ import annotations

from jobs.execution import Delivery
from jobs.worker.pools.base import Pool


class SoloPool(Pool):
    """Runs each job in the worker's own thread: simplest, one job at a time."""

    name = "solo"

    def submit(self, delivery: Delivery) -> None:
        self.completions.put((delivery.tag, self._run(delivery)))
