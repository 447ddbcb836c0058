"""The worker's heartbeat: its row in ``jobs.Worker``, and keeping in-flight messages leased."""

from __future__ import annotations

import logging
import os
import threading
import time

from django.db import DatabaseError, connections
from django.utils import timezone

from jobs.broker import get_broker
from jobs.database import database
from jobs.models import Worker as WorkerRow

logger = logging.getLogger("jobs.worker")


class Heart:
    def __init__(self, worker) -> None:
        self.worker = worker
        self.interval = float(_setting("WORKER_HEARTBEAT_INTERVAL"))
        self.row: WorkerRow | None = None
        self._next = 0.0
        self._outage_written = None  # the database outage last written to the row
        self._create_later = False  # the database was out of reach at start
        self.alive_at = time.monotonic()  # the main loop's last turn
        self._beating = threading.Lock()  # one beat at a time (see _beat_while_blocked)
        self._stopped = threading.Event()
        self._keeper: threading.Thread | None = None

    def start(self) -> None:
        try:
            self._create_row()
        except DatabaseError as exc:
            self._create_later = database.failed(exc)  # by a heartbeat, once it is back
            if not self._create_later:
                logger.warning("Could not record this worker: %s", exc)
        self._next = time.monotonic() + self.interval
        if self.worker.pool.blocks_loop:
            self._stopped.clear()
            self._keeper = threading.Thread(target=self._beat_while_blocked,
                                            name="jobs-heartbeat", daemon=True)
            self._keeper.start()

    def _beat_while_blocked(self) -> None:
        """For a pool whose jobs run in the main loop itself (``solo``): a long job stops
        the loop's turns and the beats they make. This thread beats meanwhile, so that the
        worker's row stays online and its messages stay leased: on Redis and ``django://``
        a message not renewed within its timeout goes to another worker, which would run
        the job a second time."""
        try:
            while not self._stopped.wait(self.interval):
                if self.worker.pool.running() and time.monotonic() - self.alive_at >= self.interval:
                    self.beat()
        finally:
            connections.close_all()  # this thread's own

    def _create_row(self) -> None:
        w = self.worker
        twin = WorkerRow.objects.online().filter(hostname=w.hostname).first()
        if twin is not None:
            # As Celery warns of a duplicate node name: control commands and their replies,
            # and the runs of broadcast jobs, go by the name.
            logger.warning("Another worker named %s (pid %s) was seen %.0f s ago and has not "
                           "stopped: give each worker its own name with -n, e.g. "
                           "-n worker2@%%h (two of one name can't be told apart by control "
                           "commands, and record their runs of a broadcast job under one id); "
                           "if it was killed, this is only its row, which goes offline soon",
                           w.hostname, twin.pid,
                           (timezone.now() - twin.last_seen).total_seconds())
        self.row = WorkerRow.objects.create(
            hostname=w.hostname, pid=os.getpid(), queues=w.queues, pool=w.pool_name,
            concurrency=w.concurrency, broker=get_broker().display_url,
        )

    def maybe_beat(self) -> None:
        # The main loop calls this every turn: when it last did is how the watchdog
        # (jobs.middleware.watchdog) knows the loop is not stuck.
        now = self.alive_at = time.monotonic()
        if now < self._next:
            return
        self._next = time.monotonic() + self.interval
        self.beat()

    def beat(self) -> None:
        if not self._beating.acquire(blocking=False):
            return  # the other thread beats now
        try:
            self._beat()
        finally:
            self._beating.release()

    def _beat(self) -> None:
        self._renew_leases()
        if database.down or (self.row is None and not self._create_later):
            return  # the worker waits for it; the row tells of the wait once it is back
        try:
            if self.row is None:
                self._create_row()
            outage = database.last_outage
            row = WorkerRow.objects.filter(pk=self.row.pk)
            row.update(last_seen=timezone.now(), processed=self.worker.processed,
                       active=self.worker.pool.running(), held=self.worker.held(),
                       **self._outage_fields(outage))
            self._outage_written = outage
            if row.filter(stop_requested_at__isnull=False).exists():
                logger.warning("Shutdown requested from the admin: warm shutdown")
                self.worker.stop()
        except DatabaseError as exc:
            if not database.failed(exc):
                logger.warning("Heartbeat not recorded: %s", exc)

    def _outage_fields(self, outage) -> dict:
        """The latest database outage the worker waited through, unless written already."""
        if outage is None or outage == self._outage_written:
            return {}
        return {"database_lost_at": outage[0], "database_back_at": outage[1]}

    def _renew_leases(self) -> None:
        """Keep the broker from handing our running jobs to another worker.

        A message a worker holds is given to another after a timeout (a lease on
        ``django://``, the visibility timeout on Redis); renewing those of our in-flight
        messages keeps a long job ours, while a dead worker's come back after one timeout.
        """
        broker = get_broker()
        channel = getattr(self.worker, "channel", None)
        if channel is None or not broker.renews_leases:
            return
        generation = self.worker._generation
        tags = [key[1] for key in list(self.worker._inflight) if key[0] == generation]
        # And those of jobs still running from a connection lost since: their messages are
        # the worker's until the runs end (jobs.middleware.redelivery).
        tags += [d.tag[1] for d in self.worker.pool.running_deliveries()
                 if d.tag[0] != generation]
        try:
            broker.renew_leases(channel, tags)
        except Exception as exc:
            logger.warning("Could not renew message leases: %s", exc)

    def stop(self) -> None:
        self._stopped.set()
        if self._keeper is not None:
            self._keeper.join(self.interval + 1)
            self._keeper = None
        if self.row is None or database.down:
            return
        try:
            WorkerRow.objects.filter(pk=self.row.pk).update(
                stopped_at=timezone.now(), last_seen=timezone.now(),
                processed=self.worker.processed, active=0,
            )
        except DatabaseError:
            pass


def _setting(name):
    from jobs.conf import settings

    return getattr(settings, name)

