"""A worker's memory: prefork children share the pages of the worker that forked them, and the
worker loads no module of a feature that isn't configured. Real worker processes."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import wait_for
from tests.jobs_app import jobs as testjobs

pytestmark = pytest.mark.e2e
database_broker = pytest.mark.parametrize(
    "broker_url", [pytest.param("django", marks=pytest.mark.pg)], indirect=True)

#: Loaded only when configured: OpenTelemetry (its tracing middleware, or a client library
#: that reports to it) and jobs_inspect's rendering of answers.
UNCONFIGURED = ("jobs.middleware.tracing", "opentelemetry", "jobs.control.render")


@database_broker
def test_a_garbage_collection_in_a_prefork_child_leaves_the_workers_pages_shared(
        broker_url, start_worker):
    worker = start_worker(broker_url, "-P", "prefork", "-c", "2")
    report = testjobs.process_memory.delay().get(timeout=30)

    assert report["pid"] != worker.process.pid
    assert report["frozen"] > 10_000  # what the worker had loaded, frozen as it forked
    # Unfrozen, the collection writes to every object the child inherited: ~5,000 pages
    # (20 MB) copied from the worker, in each child.
    assert report["pages_written"] < 1_000


@database_broker
def test_a_prefork_child_runs_a_job_on_the_modules_the_worker_loaded(broker_url, start_worker):
    start_worker(broker_url, "-P", "prefork", "-c", "2")
    report = testjobs.process_memory.delay().get(timeout=30)

    # A module a child imports is a private copy in every child; those the worker loaded
    # before forking are shared. (multiprocessing loads its fork code as it forks the first.)
    assert [m for m in report["loaded_since"] if not m.startswith("multiprocessing.")] == []


@database_broker
def test_the_worker_loads_no_module_of_a_feature_left_unconfigured(broker_url, start_worker):
    start_worker(broker_url, "-P", "solo")  # jobs run in the worker's own process
    modules = testjobs.process_memory.delay().get(timeout=30)["modules"]

    assert [m for m in modules if m.startswith(UNCONFIGURED)] == []


@database_broker
def test_the_worker_keeps_nothing_its_system_checks_imported(broker_url, start_worker):
    from django.conf import settings

    # The checks import the URLconf and every view it names (the project's metrics endpoint
    # brings prometheus_client): a worker runs none of them. They run in a child process of
    # their own, which took them with it.
    start_worker(broker_url, "-P", "solo")
    modules = testjobs.process_memory.delay().get(timeout=30)["modules"]

    assert [m for m in modules if m in (settings.ROOT_URLCONF, "prometheus_client")] == []


def _gone(pid: int) -> bool:
    """The process has exited (reaped, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


@database_broker
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_prefork_child_running_a_job_dies_with_its_worker_killed_by_sigkill(
        broker_url, start_worker):
    worker = start_worker(broker_url, "-P", "prefork", "-c", "1")
    child = testjobs.pid.delay().get(timeout=30)
    handle = testjobs.blocking_wait.delay(60)
    wait_for(lambda: handle.state == "STARTED", message="the job never started")

    worker.process.kill()  # the worker alone, not its process group
    # The child, busy with its job, is killed by the kernel as its parent dies: it would
    # otherwise finish a job whose message the broker gives to another worker.
    wait_for(lambda: _gone(child), timeout=10, message="the child outlived its worker")
