"""A wider prefetch window while a worker's jobs are short.

A worker holds up to ``concurrency × 4`` messages, as Celery does with its default
multiplier, so that jobs don't wait in one worker while another is free. With short jobs
that window turns over in a millisecond or two, and the worker spends its time fetching
more: it drains a fixed window per time a message spends in it. So, unless
``WORKER_PREFETCH_MULTIPLIER`` is set (a number set is kept as it is, as Celery keeps it),
the worker holds more while its jobs are short: about as many as it finishes in
:data:`HOLD` seconds, in steps of the base window, up to :data:`MOST` per slot. What waits in
it is then never more than a few tens of milliseconds of work. It looks at the rate every
:data:`LOOK_EVERY` seconds, and sooner when the window has turned over :data:`TURNS` times
since the last look, so that a burst of short jobs widens it within milliseconds.

When jobs turn long, the window narrows back with the rate at which they finish; and if none
finishes for :data:`STALLED` seconds while every slot is busy, the messages held beyond the
base window, which would wait for those runs, are handed back to the broker for other
workers to take.
"""

from __future__ import annotations

import logging
import math
import time

from jobs.middleware import Middleware

logger = logging.getLogger("jobs.worker")

HOLD = 0.05  # seconds of work held beyond the running jobs
MOST = 16  # messages per slot, at most
LOOK_EVERY = 0.25  # seconds between two looks at the rate
#: A look comes sooner, but not before LOOK_SOONEST seconds, once the window has turned over
#: TURNS times since the last: a burst of short jobs widens it within milliseconds.
LOOK_SOONEST = 0.02
TURNS = 4
STALLED = 1.0  # seconds with every slot busy and nothing finished: hand back the extra


def window_for(base: int, concurrency: int, rate: float) -> int:
    """The window for a worker finishing ``rate`` jobs a second: ``base`` doubled as often as
    it takes to hold what it finishes in :data:`HOLD` seconds, up to :data:`MOST` per slot."""
    wanted = concurrency + math.ceil(rate * HOLD)
    size, most = base, max(base, MOST * concurrency)
    while size < wanted and size < most:
        size *= 2
    return min(size, most)


class _Pace:
    """What one worker's window is worked out from."""

    def __init__(self, worker, now: float) -> None:
        self.next_look = now + LOOK_EVERY
        self.counted = (worker.processed, now)  # jobs finished, and when, at the last look
        self.progress = (worker.processed, now)  # jobs finished, and when that count moved
        self.handed_back = False  # in this stall


class AdaptivePrefetch(Middleware):
    def __init__(self) -> None:
        self._workers: dict[int, _Pace] = {}  # id(worker) -> its pace (one worker a process,
        # but tests run several in one)

    def worker_started(self, worker) -> None:
        if getattr(worker, "adaptive_prefetch", False) and worker.prefetch:
            self._workers[id(worker)] = _Pace(worker, time.monotonic())

    def worker_stopped(self, worker) -> None:
        self._workers.pop(id(worker), None)

    def tick(self, worker) -> None:
        pace = self._workers.get(id(worker))
        if pace is None:
            return
        now = time.monotonic()
        if worker.processed != pace.progress[0]:
            pace.progress, pace.handed_back = (worker.processed, now), False
        elif not pace.handed_back and now - pace.progress[1] >= STALLED:
            pace.handed_back = True
            self._hand_back_extra(worker)
        done, since = pace.counted
        if now < pace.next_look and not (now - since >= LOOK_SOONEST
                                         and worker.processed - done >= TURNS * worker.window):
            return
        pace.next_look = now + LOOK_EVERY
        pace.counted = (worker.processed, now)
        rate = (worker.processed - done) / (now - since)
        worker.set_window(window_for(worker.prefetch, worker.concurrency, rate))

    def _hand_back_extra(self, worker) -> None:
        """Every slot busy with one run for a while: the deliveries waiting beyond the base
        window go back to the broker (the latest received first)."""
        pool = worker.pool
        running = pool.running()
        if running < pool.concurrency:
            return  # a slot is free: what waits runs now
        keep = max(0, worker.prefetch - running)
        if pool.waiting() <= keep:
            return
        waiting = pool.take_backlog()
        keep = max(0, keep - pool.waiting())  # those left are the children's: they stay
        for delivery in waiting[:keep]:
            pool.submit(delivery)
        for delivery in waiting[keep:]:
            worker.requeue(delivery)
        logger.info("Every slot has run the same job for %.0fs or more: %d job(s) waiting here "
                    "handed back, for other workers to take", STALLED, len(waiting) - keep)
