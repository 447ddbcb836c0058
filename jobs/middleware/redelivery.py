"""A message delivered again while this worker still runs its job.

When the worker's connection to the broker is lost while jobs run (a network cut, a broker
restart, RabbitMQ closing a channel whose delivery stayed unacknowledged past its consumer
timeout), the broker hands back the messages the worker held, and RabbitMQ delivers them to a
consumer again at once: often to this worker's next connection, while their jobs still run
here. Such a delivery waits for the run going on rather than running the job a second time:
once that run ends with an outcome (recorded, a retry sent, dead-lettered), the delivery is
acknowledged; if it didn't (its process died, its time limit killed it, the database was out
of reach), the delivery runs. A delivery that comes back just after the run ended is
acknowledged at once.

Another worker may still take such a message first and run the job again: delivery stays at
least once, as ever; this only keeps one worker from running a job twice over.
"""

from __future__ import annotations

import logging
import time

from jobs.middleware import Middleware
from jobs.outcome import Kind

logger = logging.getLogger("jobs.worker")

#: Outcomes after which the job needs no other run: its row says how it ended.
RAN = frozenset({Kind.SUCCEEDED, Kind.FAILED, Kind.RETRIED, Kind.REJECTED})
#: Seconds, and how many, the runs that ended without their message are remembered.
ENDED_FOR = 300.0
REMEMBER = 1000
#: Seconds a run may be seen ended before its outcome comes: one that never comes (the
#: database was out of reach, which no middleware hears of) releases the deliveries waiting.
GRACE = 1.0


def attempt(delivery) -> tuple:
    """The attempt a delivery is: its job's id and retry count."""
    return delivery.headers.get("id"), delivery.headers.get("retries")


class Redeliveries(Middleware):
    def __init__(self) -> None:
        # Attempts running here whose message went with a lost connection -> the deliveries
        # of theirs that came back meanwhile, waiting for the run.
        self._orphans: dict[tuple, list] = {}
        self._ended: dict[tuple, float] = {}  # such attempts that ran to an outcome -> when
        self._gone: dict[tuple, float] = {}  # such attempts seen ended, no outcome yet -> when

    def connection_lost(self, worker) -> None:
        for waiting in self._orphans.values():
            waiting.clear()  # their messages come back on the next connection
        for delivery in worker.pool.running_deliveries():
            self._orphans.setdefault(attempt(delivery), [])

    def receive(self, worker, delivery):
        if not (self._orphans or self._ended):
            return delivery
        key = attempt(delivery)
        waiting = self._orphans.get(key)
        if waiting is not None:
            waiting.append(delivery)
            worker.hold(delivery)
            logger.warning("Job %s[%s] was delivered again while it still runs here (its "
                           "message went back with the lost connection): it waits for that "
                           "run instead of running twice", delivery.headers.get("task"),
                           key[0], extra={"job_id": key[0]})
            return None
        ended = self._ended.get(key)
        if ended is not None and time.monotonic() - ended < ENDED_FOR:
            logger.info("Job %s[%s] was delivered again after its run here ended: "
                        "acknowledged without running it again", delivery.headers.get("task"),
                        key[0], extra={"job_id": key[0]})
            worker.ack(delivery)
            return None
        return delivery

    def completed(self, worker, delivery, outcome):
        # A run whose message went with a lost connection ends without its delivery.
        if delivery is not None or not self._orphans:
            return outcome
        key = next((key for key in self._orphans if key[0] == outcome.job_id), None)
        if key is None:
            return outcome
        waiting = self._orphans.pop(key)
        self._gone.pop(key, None)
        if outcome.kind in RAN:
            self._ended[key] = time.monotonic()
            if len(self._ended) > REMEMBER:
                del self._ended[next(iter(self._ended))]  # the oldest
            for held in waiting:
                worker.ack(held)
        else:
            for held in waiting:
                worker.resume(held, self)
        return outcome

    def tick(self, worker) -> None:
        if not self._orphans:
            return
        running = {attempt(delivery) for delivery in worker.pool.running_deliveries()}
        now = time.monotonic()
        for key in [key for key in self._orphans if key not in running]:
            if now - self._gone.setdefault(key, now) >= GRACE:
                del self._gone[key]
                for held in self._orphans.pop(key):
                    worker.resume(held, self)

    def stand_down(self, worker) -> None:
        for waiting in self._orphans.values():
            while waiting:
                worker.requeue(waiting.pop())
