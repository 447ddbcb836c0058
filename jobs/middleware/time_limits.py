"""Time limits for running jobs: ``time_limit`` and ``soft_time_limit``.

The soft limit raises :class:`SoftTimeLimitExceeded` inside the job (SIGALRM), so it can
clean up; this works wherever the job runs in its process's main thread (the prefork and
solo pools). The hard limit is set on the delivery as its ``time_limit``: the prefork pool
kills the child process running it when it passes, and the job is recorded as FAILURE with
:class:`TimeLimitExceeded`. The threads pool can enforce neither for a plain job. An
``async def`` job's limit cancels its coroutine in every pool (:mod:`jobs.coroutines`).
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from contextlib import contextmanager

from jobs import coroutines
from jobs.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from jobs.middleware import Middleware
from jobs.outcome import Kind
from jobs.registry import registry


class TimeLimits(Middleware):
    def __init__(self) -> None:
        self._hard: dict[str, float | None] = {}  # job name -> its own hard limit (per settings)
        self._set: dict[str, list] = {}  # job name -> [hard, soft] set at run time

    def set_limits(self, name: str, soft=None, hard=None) -> None:
        """``jobs_control time_limit``: the limits of job ``name`` in this worker for the
        deliveries it receives from now on, instead of the message's or the job's own."""
        self._set[name] = [_seconds(hard), _seconds(soft)]

    def receive(self, worker, delivery):
        headers = delivery.headers
        if self._set and headers["task"] in self._set:
            # Carried in the message's headers to where it runs, which arms the soft limit.
            headers = {**headers, "timelimit": self._set[headers["task"]]}
            delivery = dataclasses.replace(delivery, headers=headers)
        limits = headers.get("timelimit")
        if isinstance(limits, (list, tuple)) and limits and limits[0] is not None:
            # The message's own (a producer may send anything: limits_for checks it).
            hard = kill_after(registry.get(headers["task"]), headers)
        else:
            name = headers["task"]
            if name not in self._hard:
                self._hard[name] = kill_after(registry.get(name), {})
            hard = self._hard[name]
        return dataclasses.replace(delivery, time_limit=hard) if hard else delivery

    def execute(self, execution, call_next):
        soft = execution.message.soft_time_limit or execution.job.option("soft_time_limit")
        if execution.job.is_async:
            return _execute_async(execution, call_next, soft)
        if not soft:
            return call_next(execution)
        with soft_time_limit(soft):
            return call_next(execution)

    def completed(self, worker, delivery, outcome):
        if outcome.kind is not Kind.TIME_LIMIT:
            return outcome
        return worker.record_failure(delivery, outcome, TimeLimitExceeded(
            f"{outcome.name}[{outcome.job_id}] passed its hard time limit and was killed"))


def _execute_async(execution, call_next, soft: float | None):
    """An async job's limit cancels its coroutine, in any pool: the soft limit if it has
    one (SoftTimeLimitExceeded), else the hard one (TimeLimitExceeded)."""
    hard = execution.message.time_limit or execution.job.option("time_limit")
    if not (soft or hard):
        return call_next(execution)
    token = coroutines.limit.set((soft, SoftTimeLimitExceeded) if soft
                                 else (hard, TimeLimitExceeded))
    try:
        return call_next(execution)
    finally:
        coroutines.limit.reset(token)


def _raise_soft_limit(signum, frame):
    raise SoftTimeLimitExceeded("soft time limit exceeded")


@contextmanager
def soft_time_limit(seconds: float | None):
    """Raise SoftTimeLimitExceeded in this thread after ``seconds`` (main thread only)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGALRM, _raise_soft_limit)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


#: Seconds an async job's process is given past its hard limit, which cancels its coroutine,
#: before the pool kills it (a coroutine that ignores the cancellation).
CANCEL_GRACE = 2.0


def kill_after(job, headers: dict) -> float | None:
    """Seconds after which the pool kills the process running a delivery, if it can."""
    hard = limits_for(job, headers)[0]
    if hard and job is not None and job.is_async:
        return hard + CANCEL_GRACE
    return hard


def limits_for(job, headers: dict) -> tuple[float | None, float | None]:
    """(hard, soft) seconds for a delivery: the message's own, else the job's, else JOBS."""
    hard = soft = None
    limits = headers.get("timelimit")
    if isinstance(limits, (list, tuple)) and len(limits) == 2:
        hard, soft = (_seconds(v) for v in limits)
    if job is not None:
        hard = hard if hard is not None else job.option("time_limit")
        soft = soft if soft is not None else job.option("soft_time_limit")
    return hard, soft


def _seconds(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None
