"""``acks_late=False``: at-most-once; the message is acknowledged before the job runs."""

from __future__ import annotations

from jobs.middleware import Middleware
from jobs.registry import registry


class EarlyAcks(Middleware):
    def __init__(self) -> None:
        self._early: dict[str, bool] = {}  # job name -> acknowledged on receipt (per settings)

    def receive(self, worker, delivery):
        name = delivery.headers["task"]
        early = self._early.get(name)
        if early is None:
            early = self._early[name] = not registry.get(name).option("acks_late")
        if early:
            worker.ack_early(delivery)
        return delivery
