"""Which jobs were revoked, known to the worker without a query per job.

A job whose result is recorded learns it was revoked from the STARTED write itself (the
write skips a REVOKED row). A job that records nothing would need a read of its own before
each run; instead the worker's main thread reads the jobs revoked since its last look, once a
second, and marks their deliveries. A revocation reaches a worker within about a second, like
Celery's broadcast (``jobs_control revoke`` tells the live workers at once); one made earlier
than that is always seen.

Revocations are persistent: each is a REVOKED row, kept until ``RESULT_EXPIRES`` removes it.
A worker starting reads every revocation of a job that never started, however old, so a job
revoked while every worker was down never runs, whether its result is recorded or not.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import timedelta

from django.db import DatabaseError
from django.utils import timezone

from jobs.conf import settings
from jobs.database import database
from jobs.middleware import Middleware
from jobs.middleware.results import revoke
from jobs.models import JobRecord, States

logger = logging.getLogger("jobs.worker")

INTERVAL = 1.0  # seconds between two reads
#: Revocations a worker remembers at most, the latest (as Celery's REVOKES_MAX).
REMEMBER = 50_000
OVERLAP = timedelta(seconds=5)  # re-read a little of the past: clocks and commits lag


def terminate_revoked(pool) -> None:
    """Kill the pool's running jobs that were revoked with ``terminate=True``."""
    running = pool.running_ids()
    if not running or database.down:
        return
    # A row revoked before its job started has no start time: the job is dropped where it
    # runs when its STARTED write finds the row revoked; no need to kill it.
    try:
        revoked = list(JobRecord.objects.filter(
            job_id__in=running, state=States.REVOKED, date_started__isnull=False,
        ).values_list("job_id", flat=True))
    except DatabaseError as exc:
        if not database.failed(exc):
            logger.warning("Could not read revoked running jobs: %s", exc)
        return
    for job_id in revoked:
        pool.terminate_job(job_id)


class Revocations:
    def __init__(self) -> None:
        self._revoked: dict[str, object] = {}  # job id -> when it was revoked
        self._since = None
        self._next = 0.0

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._revoked

    def __iter__(self):
        return iter(self._revoked)

    def add(self, job_ids) -> None:
        """Revocations told by a control command (also recorded in the database)."""
        now = timezone.now()
        self._revoked.update((job_id, now) for job_id in job_ids)

    def maybe_refresh(self) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + INTERVAL
            self.refresh()

    def refresh(self) -> None:
        if database.down:
            return  # read again, from where it stopped, once it is back
        now = timezone.now()
        revoked = JobRecord.objects.filter(state=States.REVOKED)
        if self._since:
            revoked = revoked.filter(date_done__gte=self._since - OVERLAP)
        else:  # every job revoked before it started, however long ago
            revoked = revoked.filter(date_started__isnull=True)
        try:
            rows = list(revoked.order_by("-date_done").values_list("job_id", "date_done")
                        [:REMEMBER])
        except DatabaseError as exc:
            if not database.failed(exc):
                logger.warning("Could not read revoked jobs: %s", exc)
            return
        self._since = now
        self._revoked.update(rows)
        if len(self._revoked) > REMEMBER:
            latest = sorted(self._revoked.items(), key=lambda item: item[1] or now)
            self._revoked = dict(latest[-REMEMBER:])


class Revocation(Middleware):
    """Marks deliveries of revoked jobs in the worker; where the job runs, a marked one is
    recorded REVOKED instead of running. A running job revoked with ``terminate=True`` is
    stopped where the pool can (prefork kills its child), within a heartbeat interval."""

    def __init__(self) -> None:
        self.revocations = Revocations()
        self._next_terminate = 0.0

    def worker_started(self, worker) -> None:
        self.revocations.refresh()

    def tick(self, worker) -> None:
        self.revocations.maybe_refresh()
        now = time.monotonic()
        if now >= self._next_terminate:
            self._next_terminate = now + settings.WORKER_HEARTBEAT_INTERVAL
            terminate_revoked(worker.pool)

    def receive(self, worker, delivery):
        job_id = delivery.headers.get("id")
        if job_id in self.revocations:
            return dataclasses.replace(delivery, revoked=True)
        return delivery

    def execute(self, execution, call_next):
        if execution.delivery is not None and execution.delivery.revoked:
            return revoke(execution, "revoked before it started")
        return call_next(execution)
