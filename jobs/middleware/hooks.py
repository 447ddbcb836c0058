"""Calls a task class's hooks (:mod:`jobs.hooks`): ``before_start`` just before the job's
function, then, once the outcome is recorded, ``on_success``, ``on_failure`` or
``on_retry``, and ``after_return`` — Celery's order.

Hooks watch; they don't steer: one that raises is logged with its traceback and the job's
outcome stands. A job whose class overrides no hook skips this middleware (``applies_to``):
it costs nothing.
"""

from __future__ import annotations

import logging

from jobs.hooks import ExceptionInfo
from jobs.middleware import Middleware
from jobs.models import States
from jobs.outcome import Kind

logger = logging.getLogger("jobs.worker")

#: The state each outcome of a run records, and the hook told of it.
STATES = {Kind.SUCCEEDED: (States.SUCCESS, "on_success"),
          Kind.FAILED: (States.FAILURE, "on_failure"),
          Kind.RETRIED: (States.RETRY, "on_retry")}


class Hooks(Middleware):
    def applies_to(self, job):
        return bool(job.hooks)

    def started(self, execution):
        if "before_start" in execution.job.hooks:
            message = execution.message
            _call(execution, "before_start", message.id, message.args, message.kwargs)

    def finished(self, execution, outcome):
        hooks = execution.job.hooks
        if execution.request is None or outcome.kind not in STATES:
            return  # the function never ran (revoked, expired, refused)
        message = execution.message
        state, hook = STATES[outcome.kind]
        einfo = None
        if outcome.kind is Kind.SUCCEEDED:
            retval = outcome.value
            if hook in hooks:
                _call(execution, hook, retval, message.id, message.args, message.kwargs)
        else:
            retval, einfo = outcome.exception, ExceptionInfo(outcome.exception, outcome.traceback)
            if hook in hooks:
                _call(execution, hook, retval, message.id, message.args, message.kwargs, einfo)
        if "after_return" in hooks:
            _call(execution, "after_return", state, retval, message.id, message.args,
                  message.kwargs, einfo)


def _call(execution, hook: str, *args) -> None:
    try:
        getattr(execution.job, hook)(*args)
    except Exception:
        job_id = execution.message.id
        logger.exception("%s.%s raised for job %s; ignored (a hook changes no outcome)",
                         type(execution.job).__qualname__, hook, job_id,
                         extra={"job_id": job_id})
