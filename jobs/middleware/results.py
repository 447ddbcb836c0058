"""Records each job's states in the ORM: STARTED before it runs, then its outcome.

The STARTED write also counts the attempt's deliveries (read by the poison-job cap) and
refuses a job revoked a moment before (it is then recorded REVOKED and not run). Jobs that
ignore their result, or don't track STARTED, write one row when they are done, or none.

Group commit (``JOBS["RESULT_GROUP_COMMIT"]``, PostgreSQL): a worker's job commits its
outcome without waiting for the disk, and the worker makes the outcomes that came in together
durable with one commit that does wait (:func:`jobs.lifecycle.make_durable`) before it
acknowledges their messages. That commit also notifies the callers waiting for them. A job's
outcome costs no disk flush of its own: one flush serves every job that ended meanwhile.
"""

from __future__ import annotations

import dataclasses
import logging

from django.db import DataError, IntegrityError

from jobs import connections, lifecycle
from jobs.conf import settings
from jobs.database import database, is_connection_error
from jobs.middleware import Middleware
from jobs.outcome import Kind

logger = logging.getLogger("jobs.worker")


class Results(Middleware):
    def execute(self, execution, call_next):
        message = execution.message
        if lifecycle.counts_starts(execution.job, message.ignore_result):
            starts = connections.once_more_if_disconnected(
                lifecycle.mark_started, message, execution.hostname, True)
            if starts is None:
                return revoke(execution, "revoked before it started")
            execution.starts, execution.started = starts, True
        outcome = call_next(execution)
        if execution.ignores_result:
            return outcome
        # Delivered by a worker, which makes the write durable before it acknowledges.
        return record(execution, outcome, deferred=execution.delivery is not None
                      and settings.RESULT_GROUP_COMMIT)

    def settle(self, worker, outcomes):
        deferred = [outcome.job_id for outcome in outcomes if outcome.deferred]
        if not deferred:
            return outcomes
        try:
            connections.once_more_if_disconnected(lifecycle.make_durable, deferred)
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            # Durable or not, nobody can tell: the jobs run again.
            database.failed(exc)
            reason = f"{type(exc).__name__}: {exc}"
            return [dataclasses.replace(outcome, kind=Kind.NO_DATABASE, reason=reason)
                    if outcome.deferred else outcome for outcome in outcomes]
        return outcomes


def record(execution, outcome, deferred: bool = False):
    """Write ``outcome`` to the job's row; a value that can't be stored fails the job.
    ``deferred``: the write may commit without waiting for the disk; the outcome returned
    then says so, for the worker to make it durable (``settle``)."""
    message, hostname, started = execution.message, execution.hostname, execution.started
    kind = outcome.kind
    written = False
    if kind is Kind.SUCCEEDED:
        try:
            written = lifecycle.mark_succeeded(message, outcome.value, outcome.runtime,
                                               hostname, started, deferred)
        except (TypeError, ValueError, DataError, IntegrityError) as exc:  # NaN, NUL, bytes...
            error = TypeError(f"{message.name} returned a value that can't be stored: {exc}")
            outcome = execution.outcome(Kind.FAILED, f"TypeError: {error}", exception=error,
                                        runtime=outcome.runtime)
            kind = Kind.FAILED
    if kind is Kind.FAILED:
        written = lifecycle.mark_failed(message, outcome.exception, outcome.traceback,
                                        outcome.runtime or None, hostname, started=started,
                                        deferred=deferred)
    elif kind is Kind.RETRIED:
        written = lifecycle.mark_retry(message, outcome.exception, outcome.traceback, hostname,
                                       started, deferred)
    return dataclasses.replace(outcome, deferred=True) if written else outcome


def revoke(execution, reason: str):
    """Record the job REVOKED, without running it; the outcome to return."""
    lifecycle.mark_revoked(execution.message, reason, execution.hostname)
    return execution.outcome(Kind.REVOKED, reason)
