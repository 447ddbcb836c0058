"""A message delivered again while this worker still runs its job.

When the worker's connection to the broker is lost while jobs run (a network cut, a broker
restart, RabbitMQ closing a channel whose delivery stayed unacknowledged past its consumer
timeout), the broker hands back the messages the worker held, and RabbitMQ delivers them to a
consumer again at once: often to this worker's next connection, while their jobs still run
here. Such a delivery waits for the run going on rather than running the job a second time:
once that run ends with an outcome (recorded, a retry sent, dead-lettered, revoked), the
delivery is acknowledged; if it didn't (its process died, its time limit killed it, the
database was out of reach), the delivery runs. A delivery that comes back just after the run
ended is acknowledged at once.

On Redis and ``django://`` the broker keeps such a message for the run instead of handing it
back (:meth:`jobs.broker.Broker.keep`): while the run goes on the worker's heartbeat keeps
renewing its visibility timeout (lease), and when it ends with an outcome the message is
acknowledged by its tag, so that no worker gets it again; when it ends without one, the
message is handed back by its tag, to run again at once rather than when its lease runs
out. On RabbitMQ another worker may take such a message first and run the job again:
delivery stays at least once, as ever.
"""

from __future__ import annotations

import logging
import time

from jobs.middleware import Middleware
from jobs.outcome import Kind

logger = logging.getLogger("jobs.worker")

#: Outcomes after which the job needs no other run: its row says how it ended (a revoked
#: job's too: it must not run again).
RAN = frozenset({Kind.SUCCEEDED, Kind.FAILED, Kind.RETRIED, Kind.REJECTED, Kind.REVOKED})
#: Seconds, and how many, the runs that ended without their message are remembered.
ENDED_FOR = 300.0
REMEMBER = 1000
#: Seconds a run may be seen ended before its outcome comes: one that never comes (the
#: database was out of reach, which no middleware hears of) releases the deliveries waiting.
GRACE = 1.0


def attempt(delivery) -> tuple:
    """The attempt a delivery is: its job's id and retry count."""
    return delivery.headers.get("id"), delivery.headers.get("retries")


class _Lost:
    """What a worker knows of its runs whose message went with a lost connection."""

    def __init__(self) -> None:
        # attempt running -> (the delivery it runs, its deliveries back meanwhile)
        self.orphans: dict[tuple, tuple[object, list]] = {}
        self.ended: dict[tuple, float] = {}  # attempt that ran to an outcome -> when
        self.gone: dict[tuple, float] = {}  # attempt seen ended, no outcome yet -> when


class Redeliveries(Middleware):
    def __init__(self) -> None:
        self._workers: dict[int, _Lost] = {}  # id(worker) -> its runs (one worker a process,
        # but tests run several in one)

    def connection_lost(self, worker) -> None:
        lost = self._workers.setdefault(id(worker), _Lost())
        for _, waiting in lost.orphans.values():
            waiting.clear()  # their messages come back on the next connection
        for delivery in worker.pool.running_deliveries():
            lost.orphans.setdefault(attempt(delivery), (delivery, []))

    def receive(self, worker, delivery):
        lost = self._workers.get(id(worker))
        if lost is None or not (lost.orphans or lost.ended):
            return delivery
        key = attempt(delivery)
        orphan = lost.orphans.get(key)
        if orphan is not None:
            orphan[1].append(delivery)
            worker.hold(delivery)
            logger.warning("Job %s[%s] was delivered again while it still runs here (its "
                           "message went back with the lost connection): it waits for that "
                           "run instead of running twice", delivery.headers.get("task"),
                           key[0], extra={"job_id": key[0]})
            return None
        ended = lost.ended.get(key)
        if ended is not None and time.monotonic() - ended < ENDED_FOR:
            logger.info("Job %s[%s] was delivered again after its run here ended: "
                        "acknowledged without running it again", delivery.headers.get("task"),
                        key[0], extra={"job_id": key[0]})
            worker.ack(delivery)
            return None
        return delivery

    def completed(self, worker, delivery, outcome):
        # A run whose message went with a lost connection ends without its delivery.
        lost = self._workers.get(id(worker))
        if delivery is not None or lost is None or not lost.orphans:
            return outcome
        key = next((key for key in lost.orphans if key[0] == outcome.job_id), None)
        if key is None:
            return outcome
        first, waiting = lost.orphans.pop(key)
        lost.gone.pop(key, None)
        if outcome.kind in RAN:
            lost.ended[key] = time.monotonic()
            if len(lost.ended) > REMEMBER:
                del lost.ended[next(iter(lost.ended))]  # the oldest
            worker.ack_lost(first)  # Redis, django://: nothing left to come back, anywhere
            for held in waiting:
                worker.ack(held)
        else:
            self._run_again(worker, first, waiting)
        return outcome

    def _run_again(self, worker, first, waiting: list) -> None:
        """A run ended without an outcome: its job is to run again."""
        worker.give_back_lost(first)  # Redis, django://: the kept message, now
        for held in waiting:
            worker.resume(held, self)

    def tick(self, worker) -> None:
        lost = self._workers.get(id(worker))
        if lost is None or not lost.orphans:
            return
        running = {attempt(delivery) for delivery in worker.pool.running_deliveries()}
        now = time.monotonic()
        for key in [key for key in lost.orphans if key not in running]:
            if now - lost.gone.setdefault(key, now) >= GRACE:
                del lost.gone[key]
                self._run_again(worker, *lost.orphans.pop(key))

    def stand_down(self, worker) -> None:
        lost = self._workers.get(id(worker))
        for _, waiting in lost.orphans.values() if lost else ():
            while waiting:
                worker.requeue(waiting.pop())
