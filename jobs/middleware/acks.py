"""``acks_late=False``: at-most-once; the message is acknowledged before the job runs."""

from __future__ import annotations

from jobs.middleware import Middleware
from jobs.registry import registry


class EarlyAcks(Middleware):
    def receive(self, worker, delivery):
        if not registry.get(delivery.headers["task"]).option("acks_late"):
            worker.ack_early(delivery)
        return delivery
