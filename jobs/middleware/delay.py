"""Delayed jobs on Redis and RabbitMQ: kept in the database until due, not in worker memory.

A message due in less than a second waits in the worker until its eta. One due later is
parked as a row of the ``django://`` transport (its ``visible_at`` is the eta), then
acknowledged; when due, the worker that serves its queue moves it back to the broker. So a
delayed job survives restarts of workers and brokers, shows in the admin with its due time,
and a million of them cost no worker memory (the visibility-timeout duplicates Celery's
in-memory ETA jobs suffer can't happen). With the ``django://`` broker the rows carry the eta
themselves: only the wait of the last second is left to the worker.

A worker's copy of a broadcast job with an eta (jobs refuses one at the call, a Celery
producer can send it) waits in that worker until due, as Celery's worker keeps it: moved back
by name, it would go to a queue no worker consumes (each consumes a queue of its own, bound
to the broadcast's exchange), and any worker could take it. The copy is acknowledged when it
starts to wait: it is its worker's alone, and lost with the worker either way.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from datetime import datetime, timedelta

from django.db import DatabaseError, transaction
from django.utils import timezone
from kombu import Connection

from jobs.broker import get_broker, queue_for
from jobs.database import database
from jobs.messages import parse_datetime
from jobs.middleware import Middleware

logger = logging.getLogger("jobs.worker")

PARK_HORIZON = timedelta(seconds=1)  # due sooner than this, the worker holds it until due
RELEASE_EVERY = 0.5  # seconds between looks for due jobs


class _Waiting:
    """A worker's delayed deliveries: those held until due, and its releaser."""

    def __init__(self, releaser: Releaser | None) -> None:
        self.releaser = releaser
        self.soon: list = []  # heap of (eta, n, delivery): due within PARK_HORIZON


class DelayedJobs(Middleware):
    """Parks deliveries due later than :data:`PARK_HORIZON` in the database and releases
    them to the broker when due (the database broker holds them itself); one due sooner,
    or a worker's copy of a broadcast job, waits in the worker until its time."""

    def __init__(self) -> None:
        # id(worker) -> its delayed deliveries (one worker a process, but tests run several)
        self._workers: dict[int, _Waiting] = {}
        self._count = itertools.count()

    def worker_started(self, worker) -> None:
        self._workers[id(worker)] = _Waiting(
            None if get_broker().durable_delay else Releaser(worker))

    def _of(self, worker) -> _Waiting:
        waiting = self._workers.get(id(worker))
        if waiting is None:  # its worker_started hook failed: nothing parked, then
            waiting = self._workers[id(worker)] = _Waiting(None)
        return waiting

    def receive(self, worker, delivery):
        eta = _eta(delivery.headers)
        if eta is None:
            return delivery
        now = timezone.now()
        if eta <= now:
            return delivery
        waiting = self._of(worker)
        if waiting.releaser is not None and eta - now > PARK_HORIZON \
                and not get_broker().routing.fanout(delivery.queue):
            waiting.releaser.park(delivery)  # acknowledged once written (at the next tick)
        else:
            if get_broker().routing.fanout(delivery.queue) and get_broker().acks_broadcasts:
                # A copy kept by the worker's own queue, which goes with the worker: nothing
                # is kept by leaving it unacknowledged, and RabbitMQ would close the channel
                # once its consumer timeout passed (30 minutes by default), handing back the
                # worker's other messages and dropping the copy with the queue.
                worker.ack_early(delivery)
            heapq.heappush(waiting.soon, (eta, next(self._count), delivery))
            worker.hold(delivery)
        return None

    def tick(self, worker) -> None:
        waiting = self._workers.get(id(worker))
        if waiting is None:
            return
        soon = waiting.soon
        if soon:
            now = timezone.now()
            while soon and soon[0][0] <= now:
                worker.resume(heapq.heappop(soon)[2], self)
        if waiting.releaser is not None:
            waiting.releaser.flush()
            waiting.releaser.maybe_release(worker.connection)

    def connection_lost(self, worker) -> None:
        waiting = self._of(worker)
        waiting.soon.clear()  # their messages come again on the next connection
        if waiting.releaser is not None:
            waiting.releaser.forget()

    def stand_down(self, worker) -> None:
        waiting = self._of(worker)
        while waiting.soon:
            worker.requeue(heapq.heappop(waiting.soon)[2])
        if waiting.releaser is not None:
            waiting.releaser.flush()  # delayed jobs received since the last tick: park them now

    def worker_stopped(self, worker) -> None:
        waiting = self._workers.pop(id(worker), None)
        if waiting is not None and waiting.releaser is not None:
            waiting.releaser.close()


def _eta(headers: dict) -> datetime | None:
    try:
        return parse_datetime(headers.get("eta"))
    except ValueError:
        return None


class Releaser:
    def __init__(self, worker) -> None:
        self.worker = worker
        self.queues = worker.queues
        self._store: Connection | None = None
        self._next = 0.0
        self._parked: list = []  # deliveries to park at the next flush

    @property
    def store(self) -> Connection:
        if self._store is None:
            from jobs.transport import register

            register()
            self._store = Connection("django://")
        return self._store

    def park(self, delivery) -> None:
        """Keep ``delivery`` in the database until its eta: noted now, written and then
        acknowledged by :meth:`flush` with the others received in the same round."""
        self._parked.append(delivery)

    def flush(self) -> None:
        """Write the noted messages in one transaction, then acknowledge them. A crash in
        between means only that a message is both parked and delivered again."""
        parked, self._parked = self._parked, []
        if not parked:
            return
        if database.down:  # the broker keeps them until it is back
            for delivery in parked:
                self.worker.requeue(delivery)
            return
        try:
            alias = self.store.default_channel.database
            with transaction.atomic(using=alias), self.store.Producer() as producer:
                for delivery in parked:
                    producer.publish(
                        delivery.body, exchange="", routing_key=delivery.queue,
                        headers=delivery.headers, content_type=delivery.content_type,
                        content_encoding=delivery.content_encoding,
                        priority=delivery.properties.get("priority"),
                        correlation_id=delivery.properties.get("correlation_id"),
                        retry=False,
                    )
        except Exception as exc:  # the database is down: the broker keeps them meanwhile
            if not database.failed(exc):
                logger.error("Could not park %d delayed job(s), handing them back: %s",
                             len(parked), exc)
            for delivery in parked:
                self.worker.requeue(delivery)
            return
        for delivery in parked:
            self.worker.ack(delivery)
            logger.info("Job %s[%s] is delayed until %s", delivery.headers.get("task"),
                        delivery.headers.get("id"), delivery.headers.get("eta"),
                        extra={"job_id": delivery.headers.get("id")})

    def close(self) -> None:
        if self._store is not None:
            self._store.release()
            self._store = None

    def forget(self) -> None:
        """Drop the noted messages (their connection is gone: they come back anyway)."""
        self._parked = []

    def maybe_release(self, broker: Connection) -> int:
        if time.monotonic() < self._next or database.down:
            return 0
        self._next = time.monotonic() + RELEASE_EVERY
        try:
            return self.release(broker)
        except DatabaseError as exc:
            # A job moved but not yet deleted from the database is moved again later.
            if not database.failed(exc):
                raise
            return 0

    def release(self, broker: Connection) -> int:
        """Move due jobs of our queues to the broker; returns how many."""
        moved = 0
        channel = self.store.default_channel
        with broker.Producer() as producer:
            for name in self.queues:
                while (message := channel.basic_get(name, no_ack=False)) is not None:
                    producer.publish(
                        message.body, exchange="", routing_key=name, declare=[queue_for(name)],
                        headers=message.headers, content_type=message.content_type,
                        content_encoding=message.content_encoding,
                        priority=message.properties.get("priority"),
                        correlation_id=message.properties.get("correlation_id"),
                        delivery_mode=2,
                    )
                    message.ack()
                    moved += 1
        return moved
