"""End to end: Django tasks (tests/jobs_app/tasks.py) enqueued here run in real
``jobs_worker`` processes, on every broker, beside ``@job`` jobs."""

from __future__ import annotations

import signal
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.compat.tasks import InvalidTask, task_backends
from jobs.models import DeadLetter, JobRecord, Message
from tests.conftest import broker_params, wait_for
from tests.jobs_app import jobs as testjobs, tasks

pytestmark = pytest.mark.e2e
brokers = pytest.mark.parametrize("broker_url", broker_params(), indirect=True)


def finished(result, timeout: float = 30):
    def done():
        result.refresh()
        return result.is_finished

    wait_for(done, timeout=timeout, message=f"task {result.id} did not finish")
    return result


@brokers
def test_tasks_run_on_a_worker_beside_jobs(broker_url, start_worker):
    start_worker(broker_url, "-c", "2")
    results = {
        "add": tasks.add.enqueue(2, 3),
        "async": tasks.async_add.enqueue(20, 22),
        "context": tasks.who_runs_me.enqueue(1),
        "other queue": tasks.on_other_queue.enqueue(4),
        "fail": tasks.fail.enqueue("no"),
        "retried": tasks.fails_until.enqueue(2),
    }
    assert testjobs.add_untracked.delay(1, 1).get(timeout=30) == 2
    for result in results.values():
        finished(result)
    assert results["add"].return_value == 5
    assert results["async"].return_value == 42
    context = results["context"].return_value
    assert (context["id"], context["attempt"]) == (results["context"].id, 1)
    assert results["other queue"].return_value == 8
    assert results["fail"].status == "FAILED"
    assert results["fail"].errors[0].exception_class is ValueError
    assert (results["retried"].return_value, results["retried"].attempts) == (2, 2)
    assert all(r.worker_ids[0].startswith("jobs@") for r in results.values())


@brokers
def test_a_higher_priority_task_runs_first(broker_url, start_worker):
    if not task_backends["default"].supports_priority:  # RabbitMQ without x-max-priority
        with pytest.raises(InvalidTask, match="priority"):
            tasks.started_at.using(priority=50)
        return
    low = [tasks.started_at.using(priority=-100).enqueue(f"low{i}") for i in range(3)]
    high = tasks.started_at.using(priority=100).enqueue("high")
    start_worker(broker_url, "-P", "solo")
    ran = sorted((finished(r).return_value for r in [*low, high]), key=lambda v: v["at"])
    assert ran[0]["tag"] == "high"


@brokers
def test_a_deferred_task_survives_the_restart_of_its_worker(broker_url, start_worker):
    first = start_worker(broker_url, "-c", "1")
    run_after = timezone.now() + timedelta(seconds=3)
    result = tasks.started_at.using(run_after=run_after).enqueue("later")
    # Parked as a row of the database (Redis, RabbitMQ), or a row from the start.
    wait_for(lambda: Message.objects.exists(), message="the deferred task was not parked")
    first.kill_all(signal.SIGKILL)
    start_worker(broker_url, "-c", "1")
    result = finished(result)
    assert result.status == "SUCCESSFUL" and result.started_at >= run_after


@pytest.mark.parametrize("broker_url", ["django"], indirect=True)
def test_a_task_past_its_time_limit_is_killed_and_failed(broker_url, start_worker):
    start_worker(broker_url, "-c", "1")
    result = finished(tasks.spin_forever.enqueue())
    assert result.status == "FAILED"
    assert result.errors[0].exception_class_path == "jobs.exceptions.TimeLimitExceeded"


@pytest.mark.parametrize("broker_url", ["django"], indirect=True)
def test_a_task_no_worker_knows_is_dead_lettered_and_shown_in_the_admin(
        broker_url, start_worker, admin_client):
    from tests.jobs_app import unknown_tasks  # the worker never imports it

    start_worker(broker_url, "-c", "1")
    result = unknown_tasks.nobody_knows_me.enqueue()
    letter = wait_for(lambda: DeadLetter.objects.filter(job_id=result.id).first())
    assert "unregistered job" in letter.reason
    done = finished(tasks.add.enqueue(1, 1))
    page = admin_client.get("/admin/jobs/jobrecord/").content.decode()
    assert done.id in page and "tests.jobs_app.tasks.add" in page
    assert JobRecord.objects.get(job_id=done.id).state == "SUCCESS"
