"""Sends the job and worker signals of :mod:`jobs.signals` at each step of a job's life.

Receivers are observers: the signals go out with ``send_robust``, and a receiver that raises
is logged with its traceback; the job's outcome stands, and it never runs again for it.
"""

from __future__ import annotations

from jobs import signals
from jobs.middleware import Middleware
from jobs.outcome import Kind
from jobs.signals import send


class Signals(Middleware):
    def after_publish(self, job, message) -> None:
        if signals.job_enqueued.receivers:  # checked here too: per message of a bulk send
            send(signals.job_enqueued, job, job_id=message.id, name=message.name,
                 message=message)

    def worker_started(self, worker) -> None:
        send(signals.worker_ready, worker)

    def worker_stopped(self, worker) -> None:
        send(signals.worker_shutdown, worker)

    def process_started(self) -> None:
        import os

        send(signals.worker_process_init, None, pid=os.getpid())

    def started(self, execution) -> None:
        message = execution.message
        send(signals.job_started, execution.job, job_id=message.id, name=message.name,
             request=execution.request)

    def finished(self, execution, outcome) -> None:
        message, job, kind = execution.message, execution.job, outcome.kind
        common = {"job_id": message.id, "name": message.name}
        if kind is Kind.SUCCEEDED:
            send(signals.job_succeeded, job, request=execution.request, result=outcome.value,
                 runtime=outcome.runtime, **common)
        elif kind is Kind.FAILED:
            send(signals.job_failed, job, request=execution.request, exception=outcome.exception,
                 traceback=outcome.traceback, runtime=outcome.runtime or None, **common)
        elif kind is Kind.RETRIED:
            send(signals.job_retried, job, request=execution.request,
                 exception=outcome.exception, eta=outcome.eta, **common)
        elif kind is Kind.REVOKED:
            send(signals.job_revoked, job, reason=outcome.reason, **common)
