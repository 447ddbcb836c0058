"""The scheduler: send each periodic task's job once per due time, however many run.

Each tick asks the database for the earliest ``next_run_at`` of the enabled tasks (one
read through the index on it) and sleeps until then, a second at most, so edits made
anywhere are seen on the next tick. Due tasks are handled in batches, each in one
transaction:

1. lock the batch's rows where the database can (``SELECT ... FOR UPDATE SKIP LOCKED``:
   two schedulers share the work instead of queueing for it);
2. decide about each due time (:func:`jobs_beat.missed_runs.settle`: run it, skip a missed
   one, finish a one-off) and prepare its message;
3. claim it with a compare-and-set: ``UPDATE ... WHERE id = %s AND next_run_at = <the due
   time read> AND plan = <the plan read> AND enabled``, which records the run and moves
   ``next_run_at`` on. Only one transaction can match a due time, so only one sends it, on
   any database, with or without row locks;
4. publish: with the database broker the message row is written in the same transaction;
   with Redis or RabbitMQ it is sent after the commit, and a send that fails gives the due
   time back, to be tried on the next tick.

A task changed behind the model's back (``QuerySet.update()`` of its schedule, start time or
enabled flag) has a ``plan`` that no longer matches: it is planned again instead of run,
when it comes due or, at the latest, at the next reconcile (every few seconds).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import DatabaseError, connection, connections, transaction
from django.db.models import F
from django.utils import timezone

from jobs.broker import get_broker
from jobs.database import PROBE_EVERY, database
from jobs.exceptions import PublishError
from jobs.housekeeping import Housekeeper
from jobs_beat import missed_runs, sending
from jobs_beat.models import PLAN_FIELDS, PeriodicTask, plan_key, plan_key_of_values

logger = logging.getLogger("jobs.beat")

#: Headers that tell a worker (and whoever reads the message) which task and due time sent it.
TASK_HEADER = "periodic_task_name"
DUE_HEADER = "periodic_task_due_at"


@dataclass(frozen=True, slots=True)
class Claim:
    """A run recorded in the database whose message is still to be sent."""

    pk: int
    name: str
    due: datetime
    plan: str
    prepared: sending.Prepared
    last_run_at: datetime | None
    last_job_id: str


class Scheduler:
    """The beat loop. ``run()`` until stopped; ``tick(now)`` once (tests use fixed clocks)."""

    def __init__(self, *, tick: float = 1.0, reconcile_interval: float = 5.0,
                 batch: int = 100, sync_settings: bool = True) -> None:
        self.tick_interval = tick
        self.reconcile_interval = reconcile_interval
        self.batch = batch
        self.sync_settings = sync_settings
        self.name = f"beat@{socket.gethostname()}:{os.getpid()}"
        self._next_reconcile = 0.0
        self.housekeeper = Housekeeper()  # expired rows: jobs.housekeeping

    # Running -----------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Schedule until ``stop`` is set."""
        stop = stop or threading.Event()
        started = False
        try:
            while not stop.is_set():
                if not database.available():  # said once; probed once a second meanwhile
                    stop.wait(min(self.tick_interval, PROBE_EVERY))
                    continue
                if not started:
                    started = self._start()
                    if not started:
                        stop.wait(self.tick_interval)
                        continue
                self.housekeeper.maybe_run()  # a second at most, now and then
                stop.wait(self._safe_tick())
        finally:
            connection.close()
            logger.info("Scheduler %s stopped", self.name)

    def _start(self) -> bool:
        """Sync JOBS_BEAT_SCHEDULE; False while the database can't be reached."""
        try:
            if self.sync_settings:
                from jobs_beat.sync import sync_schedule

                sync_schedule()
            count = PeriodicTask.objects.enabled().count()
        except DatabaseError as exc:
            connection.close()
            if not database.failed(exc):
                logger.warning("Scheduler: database error at start (%s); trying again", exc)
            return False
        logger.info("Scheduler %s: scheduling %d enabled periodic task(s)", self.name, count)
        return True

    def _safe_tick(self) -> float:
        try:
            return self.tick()
        except DatabaseError as exc:
            connection.close()
            if not database.failed(exc):
                logger.warning("Scheduler: database error (%s); trying again", exc)
        except Exception:
            logger.exception("Scheduler: unexpected error; going on")
        return self.tick_interval

    def tick(self, now: datetime | None = None) -> float:
        """Send what is due at ``now``; return the seconds to wait before the next tick."""
        now = now or timezone.now()
        if time.monotonic() >= self._next_reconcile:
            self.reconcile(now)
            self._next_reconcile = time.monotonic() + self.reconcile_interval
        upcoming = self._earliest(now)
        if upcoming is not None and upcoming <= now:
            self.send_due(now)
            upcoming = self._earliest(now)
        if upcoming is None or upcoming <= now:
            # Nothing soon, or due rows another scheduler holds (or a send that failed):
            # look again in a tick.
            return self.tick_interval
        return min(self.tick_interval, max(0.01, (upcoming - now).total_seconds()))

    def _earliest(self, now: datetime) -> datetime | None:
        horizon = now + timedelta(seconds=self.tick_interval)
        return (PeriodicTask.objects.filter(enabled=True, next_run_at__lte=horizon)
                .order_by("next_run_at").values_list("next_run_at", flat=True).first())

    # Sending due tasks -------------------------------------------------------------------

    def send_due(self, now: datetime) -> int:
        """Claim and send every task due at ``now``; returns how many runs were sent."""
        sent = 0
        while True:
            claims, inline, full = self._claim_batch(now)
            sent += inline + self._send_after_commit(claims)
            if not full:
                return sent

    def _claim_batch(self, now: datetime) -> tuple[list[Claim], int, bool]:
        in_transaction = get_broker().transactional_enqueue
        claims: list[Claim] = []
        sent = 0
        with transaction.atomic():
            rows = list(PeriodicTask.objects.due(now).with_schedules()
                        .select_for_update(skip_locked=True, of=("self",))[:self.batch])
            for task in rows:
                claim = self._claim(task, now)
                if claim is None:
                    continue
                if in_transaction:
                    sending.publish(claim.prepared)  # a row written in this transaction
                    sent += 1
                else:
                    claims.append(claim)
        return claims, sent, len(rows) == self.batch

    def _claim(self, task: PeriodicTask, now: datetime) -> Claim | None:
        """Decide about the task's due time and record it; a Claim if a run is to be sent."""
        due = task.next_run_at
        if task.plan != task.plan_key():
            self.replan(task, now)  # its schedule changed without save(): not this due time
            return None
        try:
            decision = missed_runs.settle(
                task.schedule, due, now, missed_runs=task.missed_runs,
                one_off=task.one_off, end=task.end_time)
        except ValueError as exc:
            logger.error("Periodic task %r has a schedule that can't work (%s); not run",
                         task.name, exc)
            self._set_plan(task, next_run_at=None)
            return None
        prepared = self._prepare(task, due, now) if decision.fire else None
        changes: dict = {"next_run_at": decision.next_run}
        if decision.next_run is None:
            changes.update(enabled=False, plan=plan_key(False, task.start_time,
                                                        task.schedule_row.key()))
        if prepared is not None:
            changes.update(last_run_at=now, total_run_count=F("total_run_count") + 1,
                           last_job_id=prepared.job_id)
        claimed = PeriodicTask.objects.filter(
            pk=task.pk, enabled=True, next_run_at=due, plan=task.plan).update(**changes)
        if not claimed:
            return None  # another scheduler, or an edit, got there first
        _log_decision(task, due, now, decision, prepared)
        if prepared is None:
            return None
        return Claim(task.pk, task.name, due, task.plan, prepared, task.last_run_at,
                     task.last_job_id)

    def _prepare(self, task: PeriodicTask, due: datetime,
                 now: datetime) -> sending.Prepared | None:
        try:
            return prepare_run(task, due, now)
        except Exception as exc:  # wrong arguments, or values the serializer can't carry
            logger.error("Periodic task %r: can't send %s (%s); skipping its run due at %s",
                         task.name, task.task, exc, due.isoformat())
            return None

    def _send_after_commit(self, claims: list[Claim]) -> int:
        sent = 0
        for claim in claims:
            try:
                sending.publish(claim.prepared)
                sent += 1
            except PublishError as exc:
                logger.error("Periodic task %r: %s; it will be sent on the next tick",
                             claim.name, exc)
                self._give_back(claim)
        return sent

    def _give_back(self, claim: Claim) -> None:
        """Undo the record of a run whose message could not be sent."""
        PeriodicTask.objects.filter(pk=claim.pk, last_job_id=claim.prepared.job_id).update(
            next_run_at=claim.due, plan=claim.plan, enabled=True,
            last_run_at=claim.last_run_at, last_job_id=claim.last_job_id,
            total_run_count=F("total_run_count") - 1)

    # Changes made behind the model's back ------------------------------------------------

    def reconcile(self, now: datetime | None = None) -> int:
        """Plan again every task whose schedule, start time or enabled flag changed since its
        next run was computed; returns how many. Reads one small row per task."""
        now = now or timezone.now()
        rows = PeriodicTask.objects.order_by().values_list("pk", "plan", *PLAN_FIELDS)
        stale = [pk for pk, plan, *values in rows if plan != plan_key_of_values(tuple(values))]
        for pk in stale:
            task = PeriodicTask.objects.with_schedules().filter(pk=pk).first()
            if task is not None and task.plan != task.plan_key():
                self.replan(task, now)
        return len(stale)

    def replan(self, task: PeriodicTask, now: datetime) -> None:
        old = task.plan
        try:
            task.replan(now)
        except ValueError as exc:
            logger.error("Periodic task %r has a schedule that can't work (%s); not run",
                         task.name, exc)
            task.next_run_at, task.plan = None, task.plan_key()
        if PeriodicTask.objects.filter(pk=task.pk, plan=old).update(
                next_run_at=task.next_run_at, plan=task.plan):
            logger.info("Periodic task %r changed; next run %s", task.name,
                        _when(task.next_run_at))

    def _set_plan(self, task: PeriodicTask, next_run_at: datetime | None) -> None:
        PeriodicTask.objects.filter(pk=task.pk, plan=task.plan).update(next_run_at=next_run_at)


def prepare_run(task: PeriodicTask, due: datetime, now: datetime) -> sending.Prepared:
    """The message of ``task``'s run for ``due``, sent at ``now``."""
    expires = (now + timedelta(seconds=task.expire_seconds)) if task.expire_seconds else None
    return sending.prepare(task.task, task.args, task.kwargs, queue=task.queue or None,
                           priority=task.priority, expires=expires,
                           headers={TASK_HEADER: task.name, DUE_HEADER: due.isoformat()})


def run_now(task: PeriodicTask, now: datetime | None = None) -> str:
    """Send ``task``'s job at once and record it as a run; its schedule is unchanged.
    Returns the job id. Raises what sending raises (TypeError, PublishError)."""
    now = now or timezone.now()
    prepared = prepare_run(task, now, now)
    in_transaction = get_broker().transactional_enqueue
    if not in_transaction:
        sending.publish(prepared)
    with transaction.atomic():
        PeriodicTask.objects.filter(pk=task.pk).update(
            last_run_at=now, total_run_count=F("total_run_count") + 1,
            last_job_id=prepared.job_id)
        if in_transaction:
            sending.publish(prepared)
    logger.info("Periodic task %r run by hand: sent %s[%s]", task.name, task.task,
                prepared.job_id)
    return prepared.job_id


def _log_decision(task, due, now, decision: missed_runs.Decision, prepared) -> None:
    extra = {"periodic_task": task.name, "job_id": prepared.job_id if prepared else None}
    if decision.expired:
        logger.info("Periodic task %r passed its end time; disabled", task.name, extra=extra)
        return
    if decision.late:
        late = (now - due).total_seconds()
        logger.warning(
            "Periodic task %r was due at %s, %.0f s ago (was the scheduler down?): %s",
            task.name, due.isoformat(), late,
            "running it once now" if decision.fire else "skipped, as its missed-run policy says",
            extra=extra)
    if prepared is not None:
        logger.info("Periodic task %r due at %s: sent %s[%s]", task.name, due.isoformat(),
                    task.task, prepared.job_id, extra=extra)
    if decision.next_run is None:
        logger.info("Periodic task %r has no further runs; disabled", task.name, extra=extra)


def _when(value: datetime | None) -> str:
    return value.isoformat() if value is not None else "none"


# Embedding in a worker ------------------------------------------------------------------------


class BeatThread:
    """The scheduler in a daemon thread of another process (``jobs_worker --beat``)."""

    def __init__(self, **options) -> None:
        self.scheduler = Scheduler(**options)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="jobs-beat", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout)

    def _run(self) -> None:
        try:
            self.scheduler.run(self.stopping)
        except Exception:
            logger.exception("The embedded scheduler stopped")
        finally:
            connections.close_all()  # this thread's connections


def embed(worker, **options) -> BeatThread:
    """Run a scheduler while ``worker`` runs: started when it is ready, stopped when it
    shuts down."""
    from jobs import signals

    beat = BeatThread(**options)

    def started(sender, **kwargs):
        if sender is worker:
            beat.start()

    def stopped(sender, **kwargs):
        if sender is worker:
            beat.stop()

    signals.worker_ready.connect(started, weak=False)
    signals.worker_shutdown.connect(stopped, weak=False)
    return beat
