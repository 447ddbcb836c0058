"""Helpers for testing code that enqueues jobs. Use as a pytest plugin:

    # conftest.py
    pytest_plugins = ["jobs.testing"]

    def test_signup_sends_welcome(client, jobs_captured):
        client.post("/signup/", {...})
        assert [m.name for m in jobs_captured.messages] == ["accounts.jobs.send_welcome"]
        jobs_captured.run_all()

A worker in the test's own process runs what is sent (:func:`running_worker`), and
:func:`fixed_clock` (the ``jobs_clock`` fixture) stops the wall clock so that etas, expiries
and locks can be tested without waiting for them.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest

from jobs import broker
from jobs.conf import settings as jobs_settings


class Captured:
    """Messages enqueued while capturing, in order; run them in this process on demand."""

    def __init__(self) -> None:
        self.envelopes: list = []

    @property
    def messages(self):
        return [e.message for e in self.envelopes]

    def names(self) -> list[str]:
        return [m.name for m in self.messages]

    def __len__(self) -> int:
        return len(self.envelopes)

    def clear(self) -> None:
        self.envelopes.clear()

    def run_all(self, propagate: bool = True) -> list:
        """Run every captured job (and those they enqueue) with ``apply()``; returns the
        EagerResults in order."""
        from jobs.registry import registry

        results = []
        while self.envelopes:
            message = self.envelopes.pop(0).message
            job = registry.get(message.name)
            results.append(job.apply(message.args, message.kwargs, task_id=message.id,
                                     propagate=propagate))
            if job.unique:  # done, as a worker would record it: free its unique lock
                from jobs.unique import release

                release(message.id)
        return results


@contextmanager
def capture_jobs():
    """Within the block, enqueued jobs are kept in a :class:`Captured` instead of sent."""
    captured = Captured()
    original = broker.publish

    def keep(envelope, **options):
        captured.envelopes.append(envelope)

    def keep_many(envelopes, **options):
        captured.envelopes.extend(envelopes)

    original_many = broker.publish_many
    broker.publish, broker.publish_many = keep, keep_many
    try:
        yield captured
    finally:
        broker.publish, broker.publish_many = original, original_many


@pytest.fixture
def jobs_captured():
    """Capture jobs enqueued by the test instead of sending them to a broker."""
    with capture_jobs() as captured:
        yield captured


@pytest.fixture
def jobs_eager(settings):
    """Run jobs inline at ``.delay()``, as ``JOBS["ALWAYS_EAGER"] = True`` does."""
    settings.JOBS = {**(jobs_settings.user_settings or {}), "ALWAYS_EAGER": True}
    yield


@contextmanager
def running_worker(queues: list[str] | None = None, pool: str = "solo", concurrency: int = 1,
                   **options):
    """A real worker consuming in a thread of this process (``solo`` or ``threads`` pool),
    on the configured broker; stopped (warm) when the block ends. Jobs run here, so a test
    can watch them without starting a process::

        with running_worker():
            assert add.delay(2, 3).get(timeout=10) == 5

    With SQLite, the database must be one the worker's thread can see: use pytest-django's
    ``transactional_db``.
    """
    from django.db import connections as db_connections

    from jobs.worker import Worker

    worker = Worker(queues=queues, pool=pool, concurrency=concurrency, **options)

    def run() -> None:
        try:
            worker.run()
        finally:
            db_connections.close_all()  # this thread's: the test database can be dropped

    thread = threading.Thread(target=run, name="jobs-test-worker", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while getattr(worker, "channel", None) is None:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the worker did not start consuming")
        time.sleep(0.01)
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(60)


class Clock:
    """The stopped wall clock of :func:`fixed_clock`."""

    def __init__(self, traveller) -> None:
        self._traveller = traveller

    def now(self) -> datetime:
        return datetime.now(UTC)

    def advance(self, by: float | timedelta) -> datetime:
        """Move the clock forward by ``by`` (seconds or a timedelta); returns the new time."""
        self._traveller.shift(by if isinstance(by, timedelta) else timedelta(seconds=by))
        return self.now()


@contextmanager
def fixed_clock(start: datetime | None = None):
    """Stop the wall clock at ``start`` (default: now) for the block; ``clock.advance(3600)``
    moves it an hour. ``time.time()``, ``datetime.now()`` and ``timezone.now()`` read it, so
    an eta, an ``expires``, a unique lock or a result's expiry is reached when the test says.
    ``time.monotonic()`` keeps running, so a worker in this process (:func:`running_worker`)
    goes on polling, beating and shutting down as usual::

        with fixed_clock() as clock, running_worker():
            later = report.apply_async(countdown=3600)
            clock.advance(3600)
            later.get(timeout=10)

    Leases follow the wall clock too: advance it while no job is running, as a clock that
    jumps an hour makes every lease held at that moment expire. Needs ``time-machine``.
    """
    try:
        import time_machine
    except ImportError as exc:  # an optional dependency of the test helpers only
        raise ImportError("fixed_clock() needs time-machine: pip install time-machine") from exc
    with time_machine.travel(start or datetime.now(UTC), tick=False) as traveller:
        yield Clock(traveller)


@pytest.fixture
def jobs_clock():
    """A stopped wall clock for the test (see :func:`fixed_clock`)."""
    with fixed_clock() as clock:
        yield clock
