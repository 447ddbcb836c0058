"""End to end: periodic tasks sent by a real scheduler run in real workers, on every broker."""

from __future__ import annotations

import random
import signal
import time

import pytest

from jobs.models import JobRecord, States
from jobs_beat.models import PeriodicTask
from tests import factories
from tests.conftest import broker_params, wait_for
from tests.factories import every
from tests.test_beat_scheduler import ADD

pytestmark = [pytest.mark.e2e, pytest.mark.pg]
brokers = pytest.mark.parametrize("broker_url", broker_params(), indirect=True)


def every_second(x: int) -> PeriodicTask:
    """``add(x, 1)`` every second; ``x`` tells this test's results from any others."""
    return factories.periodic_task(f"add-{x}", args=[x, 1], interval=every(1))


def results_of(x: int) -> list:
    return [row.result for row in JobRecord.objects.filter(name=ADD, state=States.SUCCESS)
            if row.args == [x, 1]]


@brokers
def test_a_worker_with_beat_runs_a_one_second_task_again_and_again(broker_url, start_worker):
    x = random.randrange(10_000, 1_000_000)
    task = every_second(x)
    start_worker(broker_url, "-c", "2", "--beat")

    results = wait_for(lambda: len(results_of(x)) >= 3 and results_of(x), timeout=30,
                       message="the periodic task's results did not appear")

    assert set(results) == {x + 1}
    task.refresh_from_db()
    assert task.total_run_count >= 3

    def last_run_succeeded():
        task.refresh_from_db()
        return JobRecord.objects.filter(job_id=task.last_job_id, state=States.SUCCESS).exists()

    wait_for(last_run_succeeded, timeout=10, message="the task's last result did not appear")


@pytest.mark.parametrize("broker_url", ["django"], indirect=True)
def test_a_separate_scheduler_and_a_worker_run_a_one_second_task(broker_url, start_worker,
                                                                 start_beat):
    x = random.randrange(10_000, 1_000_000)
    every_second(x)
    start_worker(broker_url, "-c", "1")
    start_beat("--no-sync", broker_url=broker_url)
    wait_for(lambda: len(results_of(x)) >= 3, timeout=30,
             message="the periodic task's results did not appear")


@pytest.mark.parametrize("broker_url", ["django"], indirect=True)
def test_the_embedded_scheduler_stops_with_the_worker(broker_url, start_worker):
    x = random.randrange(10_000, 1_000_000)
    task = every_second(x)
    worker = start_worker(broker_url, "-c", "1", "--beat")
    wait_for(lambda: results_of(x), timeout=30, message="the task never ran")

    worker.signal(signal.SIGTERM)

    assert worker.wait(30) == 0
    assert "stopped" in worker.output.rsplit("Warm shutdown", 1)[-1]
    runs = PeriodicTask.objects.get(pk=task.pk).total_run_count
    time.sleep(1.5)
    assert PeriodicTask.objects.get(pk=task.pk).total_run_count == runs
