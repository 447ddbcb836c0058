"""Workflows on every broker, with real worker processes: a chain, a group, a chord whose
header survives a worker killed with SIGKILL, errors reaching link_error, a revoked chain."""

from __future__ import annotations

import json

import pytest

from jobs import chord, group
from jobs.models import GroupRecord, JobRecord
from project.demo.jobs import add
from tests.conftest import broker_params, wait_for
from tests.jobs_app.jobs import boom, mul, noted_failure, tally, wait_for_file, work

pytestmark = pytest.mark.e2e
brokers = pytest.mark.parametrize("broker_url", broker_params(), indirect=True)


@brokers
def test_a_chain_of_three_and_a_group_of_a_hundred(broker_url, start_worker):
    start_worker(broker_url, "-c", "2")
    last = (add.s(1, 2) | mul.s(10) | add.s(5)).delay()
    members = group(add.s(i, i) for i in range(100)).apply_async()

    assert last.get(timeout=30) == 35
    assert [last.parent.parent.get(timeout=1), last.parent.get(timeout=1)] == [3, 30]
    assert members.get(timeout=60) == [i + i for i in range(100)]
    assert members.completed_count() == 100


@brokers
def test_a_failure_reaches_link_error_and_a_revoked_chain_stops(broker_url, start_worker,
                                                                tmp_path):
    start_worker(broker_url, "-c", "2")
    failing = (add.s(1, 1) | boom.s() | mul.s(2)).apply_async(
        link_error=noted_failure.s(str(tmp_path)))
    gate = tmp_path / "go"
    stopped = (wait_for_file.si(str(gate), 1) | add.s(1) | mul.s(2)).delay()
    first = stopped.parent.parent
    wait_for(lambda: first.state == "STARTED", timeout=30)
    stopped.parent.revoke()
    gate.touch()

    wait_for(lambda: (tmp_path / f"errback-{failing.parent.id}").exists(), timeout=30)
    assert failing.state == "PENDING"
    assert first.get(timeout=30) == 1
    wait_for(lambda: stopped.parent.state == "REVOKED" and stopped.state == "REVOKED",
             timeout=30)
    assert not JobRecord.objects.filter(job_id__in=[stopped.id, stopped.parent.id],
                                        date_started__isnull=False).exists()


@brokers
def test_a_chord_of_200_survives_a_worker_killed_mid_header_and_runs_its_body_once(
        broker_url, start_worker, tmp_path):
    start_worker(broker_url, "-c", "2", "-n", "steady@chord")
    victim = start_worker(broker_url, "-c", "2", "-n", "victim@chord")
    handle = chord((work.s(i, 0.05) for i in range(200)), tally.s(str(tmp_path))).delay()
    header = handle.parent

    wait_for(lambda: header.completed_count() >= 60, timeout=60, interval=0.05,
             message="the header did not get going")
    wait_for(lambda: JobRecord.objects.filter(
        group_id=header.id, worker="victim@chord", state="STARTED").exists(),
        interval=0.005, message="the victim ran nothing")
    victim.kill_all(9)
    start_worker(broker_url, "-c", "2", "-n", "after@chord")

    assert handle.get(timeout=120) == sum(range(200))
    runs = list(tmp_path.glob("run-*"))
    assert len(runs) == 1
    assert json.loads(runs[0].read_text()) == list(range(200))
    record = GroupRecord.objects.get(group_id=header.id)
    assert (record.done, record.size, record.body_state) == (200, 200, "SENT")
    assert JobRecord.objects.get(job_id=handle.id).deliveries == 1
    # Killed while running, it ran again (and was counted once: the body's values above).
    assert JobRecord.objects.filter(group_id=header.id, deliveries__gte=2).exists()


@pytest.mark.django_db(transaction=True)
def test_a_header_job_killed_at_its_hard_time_limit_fails_the_chord(start_worker, tmp_path):
    """Recorded by the worker's main process (its pool killed the job): the chord fails too."""
    from tests.jobs_app.jobs import spin_forever

    start_worker("django://", "-c", "1")
    body = tally.s(str(tmp_path))
    body.link_error(noted_failure.s(str(tmp_path)))
    handle = chord([spin_forever.s(), add.s(1, 1)], body).delay()

    error = handle.get(timeout=30, propagate=False)
    assert type(error).__name__ == "ChordError" and "spin_forever" in str(error)
    wait_for(lambda: (tmp_path / f"errback-{handle.id}").exists())
    assert not list(tmp_path.glob("run-*"))
