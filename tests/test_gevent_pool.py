"""The ``gevent`` pool: ``jobs_worker -P gevent`` patches itself before Django loads and runs
many blocking-I/O jobs at once; it refuses to start where it can't be correct."""

from __future__ import annotations

import time

import pytest

from jobs.exceptions import ConfigurationError
from jobs.worker.pools.gevent import GeventPool, problems
from tests.conftest import broker_params
from tests.jobs_app import jobs as testjobs

pytest.importorskip("gevent")
brokers = pytest.mark.parametrize("broker_url", broker_params(), indirect=True)


@pytest.mark.e2e
@brokers
def test_blocking_jobs_wait_side_by_side_and_async_jobs_are_refused(broker_url, start_worker):
    start_worker(broker_url, "-P", "gevent", "-c", "30", "--prefetch-multiplier", "1")
    began = time.monotonic()
    handles = testjobs.blocking_wait.delay_many([(1,)] * 30)
    results = [h.get(timeout=30) for h in handles]
    took = time.monotonic() - began
    assert [r["waited"] for r in results] == [1] * 30
    assert len({r["pid"] for r in results}) == 1  # one process: greenlets, not children
    assert took < 10, f"30 jobs waiting 1 s each took {took:.1f}s on 30 greenlets"
    with pytest.raises(ConfigurationError, match="can't run on the gevent pool.*-P asyncio"):
        testjobs.async_add.delay(1, 1).get(timeout=20)


def test_an_unpatched_process_is_refused_with_the_way_to_start_it():
    [problem] = problems(10)
    assert "not monkey-patched" in problem and "jobs_worker -P gevent" in problem
    with pytest.raises(ConfigurationError, match="gevent pool can't start"):
        GeventPool(10, "test", {"json"}).start()


@pytest.mark.pg
@pytest.mark.django_db(transaction=True)
def test_more_greenlets_than_postgresql_has_connections_for_are_refused(monkeypatch):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only (pytest -m pg)")
    from gevent import monkey

    monkey_patched = {"socket", "threading"}
    monkeypatch.setattr(monkey, "is_module_patched", lambda name: name in monkey_patched)
    from psycopg import waiting

    assert "imported before gevent patched" in problems(1)[0]  # this process: it was
    monkeypatch.setattr(waiting, "wait", waiting.wait_selector)  # as under gevent
    assert problems(1) == []
    found = problems(100_000)
    assert len(found) == 1 and "100000 greenlets" in found[0] and "PgBouncer" in found[0]
