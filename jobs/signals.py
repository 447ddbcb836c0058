"""Signals sent at each step of a job's life (by :class:`jobs.middleware.signals.Signals`).

Every job signal is sent with ``sender`` = the Job (or its name when the job is unknown),
``job_id`` and ``name`` keyword arguments, plus the ones listed. Receivers are observers:
signals are sent with ``send_robust``, and a receiver that raises is logged with its
traceback and changes nothing (the job's outcome stands; it never runs again for it).
"""

import logging

from django.dispatch import Signal

logger = logging.getLogger("jobs.signals")


def send(signal: Signal, sender, **kwargs) -> None:
    """Send ``signal`` robustly, logging each receiver that raised."""
    if not signal.receivers:
        return  # nothing listens: the usual case, on the worker's per-job path
    for receiver, response in signal.send_robust(sender, **kwargs):
        if isinstance(response, Exception):
            logger.error("A receiver of a jobs signal raised; ignored: %s",
                         getattr(receiver, "__qualname__", receiver), exc_info=response)

#: A message was handed to the broker (or deferred to on_commit). kwargs: message.
job_enqueued = Signal()
#: A worker started running a job. kwargs: request.
job_started = Signal()
#: The job returned. kwargs: request, result, runtime.
job_succeeded = Signal()
#: The job raised and won't be retried. kwargs: request, exception, traceback, runtime.
job_failed = Signal()
#: The job raised and will run again. kwargs: request, exception, eta (when it runs again).
job_retried = Signal()
#: The job was revoked or expired and did not run. kwargs: reason.
job_revoked = Signal()
#: A message no worker can run was stored as a dead letter. kwargs: reason, queue.
job_dead_lettered = Signal()

#: A worker is consuming. sender: the Worker.
worker_ready = Signal()
#: A worker is shutting down. sender: the Worker.
worker_shutdown = Signal()
#: A worker process (child of the prefork pool, or the worker itself) is about to run jobs.
worker_process_init = Signal()
