"""Records each job's states in the ORM: STARTED before it runs, then its outcome.

The STARTED write also counts the attempt's deliveries (read by the poison-job cap) and
refuses a job revoked a moment before (it is then recorded REVOKED and not run). Jobs that
ignore their result, or don't track STARTED, write one row when they are done, or none.
"""

from __future__ import annotations

from django.db import DataError, IntegrityError

from jobs import connections, lifecycle
from jobs.middleware import Middleware
from jobs.outcome import Kind


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
        # The job may have run for hours, and its connection died meanwhile (a restart, a
        # proxy, an idle timeout): its outcome is written on a fresh one, not lost with it.
        return connections.once_more_if_disconnected(record, execution, outcome)


def record(execution, outcome):
    """Write ``outcome`` to the job's row; a value that can't be stored fails the job."""
    message, hostname, started = execution.message, execution.hostname, execution.started
    kind = outcome.kind
    if kind is Kind.SUCCEEDED:
        try:
            lifecycle.mark_succeeded(message, outcome.value, outcome.runtime, hostname, started)
        except (TypeError, ValueError, DataError, IntegrityError) as exc:  # NaN, NUL, bytes...
            error = TypeError(f"{message.name} returned a value that can't be stored: {exc}")
            outcome = execution.outcome(Kind.FAILED, f"TypeError: {error}", exception=error,
                                        runtime=outcome.runtime)
            kind = Kind.FAILED
    if kind is Kind.FAILED:
        lifecycle.mark_failed(message, outcome.exception, outcome.traceback,
                              outcome.runtime or None, hostname, started=started)
    elif kind is Kind.RETRIED:
        lifecycle.mark_retry(message, outcome.exception, outcome.traceback, hostname, started)
    return outcome


def revoke(execution, reason: str):
    """Record the job REVOKED, without running it; the outcome to return."""
    lifecycle.mark_revoked(execution.message, reason, execution.hostname)
    return execution.outcome(Kind.REVOKED, reason)
