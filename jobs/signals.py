"""Signals sent at each step of a job's life. Logging, metrics and the dashboard listen here.

Every job signal is sent with ``sender`` = the Job (or its name when the job is unknown),
``job_id`` and ``name`` keyword arguments, plus the ones listed.
"""

from django.dispatch import Signal

#: A message was handed to the broker (or deferred to on_commit). kwargs: message.
job_enqueued = Signal()
#: A worker started running a job. kwargs: request.
job_started = Signal()
#: The job returned. kwargs: request, result, runtime.
job_succeeded = Signal()
#: The job raised and won't be retried. kwargs: request, exception, traceback, runtime.
job_failed = Signal()
#: The job raised and will run again. kwargs: request, exception, countdown.
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
