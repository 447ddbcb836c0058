"""A worker's memory: prefork children share the pages of the worker that forked them, and the
worker loads no module of a feature that isn't configured. Real worker processes."""

from __future__ import annotations

import pytest

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
