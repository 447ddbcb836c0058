"""``autoretry_for``: a job that raises one of those exceptions is retried, as if it had
called ``raise self.retry(exc=exc)``, until its retries are used up."""

from __future__ import annotations

import traceback as tb

from jobs import context
from jobs.middleware import Middleware
from jobs.outcome import Kind


class Retries(Middleware):
    def execute(self, execution, call_next):
        outcome = call_next(execution)
        job, exc = execution.job, outcome.exception
        if (outcome.kind is not Kind.FAILED or not job.autoretry_for
                or not isinstance(exc, job.autoretry_for)
                or isinstance(exc, job.dont_autoretry_for)):
            return outcome
        token = context.current.set(execution.request)
        try:
            retry = job.retry(exc=exc, throw=False, **_retry_options(job))
        except Exception as final:  # retries used up: the job fails with its exception
            return execution.outcome(Kind.FAILED, f"{type(final).__name__}: {final}",
                                     exception=final, traceback=tb.format_exc(),
                                     runtime=outcome.runtime)
        finally:
            context.current.reset(token)
        return execution.outcome(Kind.RETRIED, str(retry), exception=exc, eta=retry.when,
                                 traceback=outcome.traceback, runtime=outcome.runtime)


def _retry_options(job) -> dict:
    options = dict(job.retry_kwargs or {})
    options.pop("countdown", None)  # retry_delay() already honours it
    return options
