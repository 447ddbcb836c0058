"""Celery's task semantics end to end: real ``jobs_worker`` processes, on every broker."""

from __future__ import annotations

import pytest
from django.utils import timezone

from jobs.models import JobRecord, Worker
from tests.conftest import broker_params, wait_for
from tests.jobs_app import jobs as testjobs

pytestmark = pytest.mark.e2e
brokers = pytest.mark.parametrize("broker_url", broker_params(), indirect=True)
database_broker = pytest.mark.parametrize(
    "broker_url", [pytest.param("django", marks=pytest.mark.pg)], indirect=True)


@brokers
def test_a_bare_retry_runs_twice_in_all_and_never_goes_past_the_call(
        broker_url, start_worker, tmp_path):
    start_worker(broker_url, "-c", "1")
    handle = testjobs.retry_without_raise.delay(str(tmp_path))
    assert handle.get(timeout=30) == 1
    row = JobRecord.objects.get(job_id=handle.id)
    assert (row.state, row.retries) == ("SUCCESS", 1)
    assert (tmp_path / "log").read_text().splitlines() == ["ran 0", "ran 1", "past retry 1"]


def heartbeats_after(hostname: str, moment, beats: int = 2):
    """Wait until the worker has written ``beats`` heartbeats after ``moment``: its revocation
    and terminate checks run at the same interval, so they have looked by then."""
    seen: set = set()

    def beaten():
        last = Worker.objects.filter(hostname=hostname).values_list("last_seen", flat=True).first()
        if last and last > moment:
            seen.add(last)
        return len(seen) >= beats

    wait_for(beaten, timeout=20, interval=0.05, message=f"{hostname} stopped beating")


@database_broker
def test_revoking_a_job_in_progress_without_terminate_does_not_kill_it(
        broker_url, start_worker, tmp_path):
    start_worker(broker_url, "-c", "1", "--hostname", "progress@e2e")
    handle = testjobs.step_by_step.delay(str(tmp_path), 1)
    wait_for(lambda: handle.state == "PROGRESS", message="no progress reported")
    handle.revoke()
    heartbeats_after("progress@e2e", timezone.now())
    assert handle.state == "PROGRESS"
    (tmp_path / "go-0").touch()
    assert handle.get(timeout=20) == 1


@database_broker
def test_revoking_a_job_in_progress_with_terminate_kills_it(broker_url, start_worker, tmp_path):
    start_worker(broker_url, "-c", "1")
    handle = testjobs.step_by_step.delay(str(tmp_path), 1)
    wait_for(lambda: handle.state == "PROGRESS", message="no progress reported")
    handle.revoke(terminate=True)
    with pytest.raises(Exception, match="terminated"):
        handle.get(timeout=20)
    assert JobRecord.objects.get(job_id=handle.id).state == "REVOKED"
