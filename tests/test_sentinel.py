"""Redis behind Sentinel (``sentinel://`` with ``master_name``, as Celery has it): our Redis
transport's claim and guarantees, on a real master, replica and sentinel started for these
tests, through a failover in the middle of a run."""

from __future__ import annotations

import json
import shutil

import pytest

from jobs.broker import get_broker
from jobs.models import JobRecord
from tests.conftest import IN_CI, TEST_TRANSPORT_OPTIONS, wait_for
from tests.jobs_app import jobs as test_jobs
from tests.sentinel import MASTER_NAME, SentinelGroup

pytestmark = pytest.mark.e2e
OPTIONS = {**TEST_TRANSPORT_OPTIONS, "master_name": MASTER_NAME}


@pytest.fixture(scope="module")
def sentinel_group():
    """One group for this module (the failover test, which changes its master, comes last)."""
    if not (shutil.which("redis-sentinel") and shutil.which("redis-server")):
        message = "redis-sentinel is not installed: apt-get install -y redis-sentinel"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    group = SentinelGroup().start()
    yield group
    group.stop()


@pytest.fixture
def sentinel_url(sentinel_group, settings, transactional_db, monkeypatch):
    """The project's broker (and its workers') is the sentinel group's master, emptied."""
    sentinel_group.master().flushall()
    settings.JOBS = {**settings.JOBS, "BROKER_URL": sentinel_group.url,
                     "BROKER_TRANSPORT_OPTIONS": OPTIONS}
    monkeypatch.setenv("JOBS_SETTINGS", json.dumps({"BROKER_TRANSPORT_OPTIONS": OPTIONS}))
    return sentinel_group.url


def test_a_sentinel_url_claims_through_our_redis_transport(sentinel_url, sentinel_group):
    from jobs.transport.redis import SentinelTransport

    handle = test_jobs.work.delay(1)
    with get_broker().connection() as connection:
        assert type(connection.transport) is SentinelTransport
        message = connection.channel().basic_get("default")

        assert message.headers["id"] == handle.id
        # Claimed on the master in one step, into jobs' own unacknowledged records.
        unacked = sentinel_group.master().hkeys(f"{OPTIONS['global_keyprefix']}jobs.unacked")
        assert [tag.decode() for tag in unacked] == [message.delivery_tag]


def test_a_sentinel_url_without_master_name_fails_the_checks(settings):
    from jobs.checks import check_settings

    settings.JOBS = {"BROKER_URL": "sentinel://127.0.0.1:26379;sentinel://127.0.0.1:26380"}
    errors = [e for e in check_settings() if e.id == "jobs.E014"]
    assert len(errors) == 1 and "master_name" in errors[0].msg


def test_jobs_run_by_a_worker_through_sentinel_survive_a_failover_with_none_lost(
        sentinel_url, sentinel_group, start_worker, tmp_path):
    handles = [test_jobs.work.delay(i, seconds=0.05) for i in range(300)]  # 7 s or more
    assert sentinel_group.master().wait(1, 5000) == 1  # the replica has every message
    worker = start_worker(sentinel_url, "-P", "threads", "-c", "2")
    wait_for(lambda: JobRecord.objects.filter(state="SUCCESS").count() >= 30, timeout=30,
             message="the worker ran nothing through the sentinel")

    new_port = sentinel_group.failover()
    more = [test_jobs.work.delay(i, seconds=0.05) for i in range(300, 350)]

    assert new_port == sentinel_group.ports["replica"]
    assert JobRecord.objects.filter(state="SUCCESS").count() < 300  # in the middle of the run
    wanted = {h.id for h in handles + more}
    wait_for(lambda: JobRecord.objects.filter(job_id__in=wanted, state="SUCCESS").count()
             == len(wanted), timeout=90, message="jobs were lost in the failover")
    assert sorted(r.result for r in JobRecord.objects.filter(job_id__in=wanted)) == list(range(350))
    # The 50 sent after the failover exist only on the new master: the worker follows it.
    assert worker.process.poll() is None
