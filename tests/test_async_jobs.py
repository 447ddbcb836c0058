"""``@job async def``: async jobs on every pool (an event loop per thread that runs them, or
the ``asyncio`` pool's one loop), their time limits, Django's async rules for the ORM, and
the async calls of the API (``adelay``, ``aapply_async``, ``aget``)."""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from jobs.exceptions import TimeLimitExceeded
from jobs.models import JobRecord
from jobs.testing import running_worker
from tests.conftest import broker_params
from tests.jobs_app import jobs as testjobs

pytestmark = pytest.mark.django_db(transaction=True)
in_process_pools = pytest.mark.parametrize("pool", ["solo", "threads", "asyncio"])


@in_process_pools
def test_an_async_job_runs_and_returns_its_value(pool):
    with running_worker(pool=pool, concurrency=2):
        assert testjobs.async_add.delay(20, 22).get(timeout=20) == 42


@in_process_pools
def test_a_time_limit_cancels_the_coroutine(pool, tmp_path):
    marker = tmp_path / "cancelled"
    began = time.monotonic()
    with running_worker(pool=pool, concurrency=2):
        handle = testjobs.async_overrun.delay(str(marker))
        with pytest.raises(TimeLimitExceeded, match="time limit"):
            handle.get(timeout=20)
    assert time.monotonic() - began < 10  # not the 30 s it waits for
    assert marker.read_text() == "cancelled"  # its finally: ran, at the cancellation
    assert JobRecord.objects.get(job_id=handle.id).state == "FAILURE"


@in_process_pools
def test_the_orm_works_from_an_async_job_through_its_async_methods(pool):
    with running_worker(pool=pool):
        handle = testjobs.async_count_results.delay()
        assert handle.get(timeout=20) >= 1  # its own row, STARTED


@in_process_pools
def test_the_orm_called_synchronously_from_an_async_job_is_refused_as_django_says(pool):
    from django.core.exceptions import SynchronousOnlyOperation

    with running_worker(pool=pool):
        handle = testjobs.async_count_results_unsafely.delay()
        with pytest.raises(SynchronousOnlyOperation):
            handle.get(timeout=20)


def test_async_code_enqueues_and_waits_with_adelay_aapply_async_and_aget():
    async def from_a_view():
        try:
            first = await testjobs.async_add.adelay(1, 2)
            second = await testjobs.async_add.aapply_async((3, 4), queue="default")
            # Both waits at once: neither queues behind the other.
            return await asyncio.gather(first.aget(timeout=20), second.aget(timeout=20))
        finally:
            await sync_to_async(connections.close_all, thread_sensitive=True)()

    with running_worker(pool="asyncio", concurrency=4):
        assert asyncio.run(from_a_view()) == [3, 7]


def test_the_asyncio_pool_runs_its_slots_worth_of_waiting_jobs_at_once():
    handles = testjobs.async_wait.delay_many([(1,)] * 40)
    with running_worker(pool="asyncio", concurrency=40, prefetch_multiplier=1):
        began = time.monotonic()
        assert [h.get(timeout=30)["waited"] for h in handles] == [1] * 40
        took = time.monotonic() - began
    assert took < 5, f"40 jobs waiting 1 s each took {took:.1f}s on 40 slots"


def test_a_plain_job_runs_on_the_asyncio_pool_too():
    with running_worker(pool="asyncio", concurrency=4):
        assert testjobs.add_untracked.delay(2, 2).get(timeout=20) == 4


def test_an_async_job_applied_inline_runs_its_coroutine():
    assert testjobs.async_add.apply((1, 1)).get() == 2


brokers = pytest.mark.parametrize("broker_url", broker_params(), indirect=True)


@pytest.mark.e2e
@brokers
@pytest.mark.parametrize("pool", ["prefork", "asyncio"])
def test_async_jobs_on_a_real_worker(broker_url, pool, start_worker, tmp_path):
    start_worker(broker_url, "-P", pool, "-c", "20")
    marker = tmp_path / "cancelled"
    overrun = testjobs.async_overrun.delay(str(marker))
    handles = testjobs.async_wait.delay_many([(0.5,)] * 20)
    assert [h.get(timeout=30)["waited"] for h in handles] == [0.5] * 20
    with pytest.raises(TimeLimitExceeded):
        overrun.get(timeout=30)
    assert marker.read_text() == "cancelled"
