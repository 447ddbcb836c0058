"""Etas, expiries and retention on a stopped clock: a worker in this process, the wall clock
moved by the test (``jobs.testing.fixed_clock``), nothing waited for."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command

from jobs.models import JobRecord
from jobs.testing import running_worker
from project.demo import jobs as demo
from tests.conftest import broker_params, wait_for
from tests.jobs_app import jobs as testjobs

brokers = pytest.mark.parametrize("broker_url", broker_params(), indirect=True)


@brokers
def test_a_job_delayed_an_hour_runs_when_the_clock_reaches_its_hour(broker_url, jobs_clock):
    with running_worker():
        sent = jobs_clock.now()
        later = demo.add.apply_async((1, 2), countdown=3600)
        assert demo.add.delay(2, 2).get(timeout=20) == 4  # sent after it, run before it
        assert later.state == "PENDING"

        jobs_clock.advance(3600)
        assert later.get(timeout=20) == 3
    assert JobRecord.objects.get(job_id=later.id).date_started == sent + timedelta(hours=1)


@brokers
def test_a_job_whose_expiry_passed_before_a_worker_took_it_is_revoked(broker_url, jobs_clock):
    expired = demo.add.apply_async((1, 2), expires=60)
    alive = demo.add.apply_async((2, 2), expires=120)
    jobs_clock.advance(90)
    with running_worker():
        assert alive.get(timeout=20) == 4
        with pytest.raises(Exception, match="expired at"):
            expired.get(timeout=20)
    assert expired.state == "REVOKED"


@brokers
def test_a_retry_with_a_countdown_runs_when_the_clock_reaches_it(broker_url, jobs_clock):
    with running_worker():
        first = jobs_clock.now()
        handle = testjobs.retry_in.delay(600)
        wait_for(lambda: handle.state == "RETRY", message="the job did not ask for a retry")
        jobs_clock.advance(600)
        assert handle.get(timeout=20) == "done after 1 retry"
    assert JobRecord.objects.get(job_id=handle.id).date_done >= first + timedelta(seconds=600)


@pytest.mark.parametrize("broker_url", ["django"], indirect=True)
def test_a_result_is_deleted_once_result_expires_has_passed(broker_url, jobs_clock, settings):
    settings.JOBS = {**settings.JOBS, "RESULT_EXPIRES": timedelta(days=1)}
    with running_worker():
        handle = demo.add.delay(1, 1)
        assert handle.get(timeout=20) == 2

    jobs_clock.advance(timedelta(days=1) - timedelta(seconds=1))
    call_command("jobs_cleanup", verbosity=0)
    assert JobRecord.objects.filter(job_id=handle.id).exists()

    jobs_clock.advance(2)
    call_command("jobs_cleanup", verbosity=0)
    assert not JobRecord.objects.filter(job_id=handle.id).exists()
