"""Prometheus metrics: scraped from a live worker (``--metrics-port``) on every broker, and
from the view a project mounts (project/urls.py: ``/metrics/``)."""

from __future__ import annotations

import socket
import urllib.request

import pytest

pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from jobs.models import DeadLetter, JobRecord  # noqa: E402
from project.demo import jobs as demo  # noqa: E402
from tests.conftest import broker_params, wait_for  # noqa: E402
from tests.jobs_app import jobs as testjobs  # noqa: E402

brokers = pytest.mark.parametrize("broker_url", broker_params(), indirect=True)


def samples(text: str) -> dict:
    """{(sample name, frozenset of labels): value} of a scrape."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.e2e
@brokers
def test_a_prefork_worker_serves_what_its_children_ran(broker_url, start_worker):
    port = free_port()
    start_worker(broker_url, "-c", "2", "--metrics-port", str(port))
    assert [demo.add.delay(1, 1).get(timeout=30) for _ in range(2)] == [2, 2]
    with pytest.raises(ValueError):
        demo.fail.delay("no").get(timeout=30)
    assert testjobs.flaky.delay(2).get(timeout=30) == 1

    def scrape():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            return samples(r.read().decode())

    add, fail, flaky = demo.add.name, demo.fail.name, testjobs.flaky.name
    retried = ("jobs_retries_total", frozenset({"job": flaky}.items()))
    # The first attempt's RETRY may reach the worker's main process after the second
    # attempt's outcome: wait for both.
    got = wait_for(lambda: (s := scrape()).get(retried) and s.get(
        ("jobs_finished_total", frozenset({"job": flaky, "state": "SUCCESS"}.items()))) and s)
    assert got[("jobs_finished_total", frozenset({"job": add, "state": "SUCCESS"}.items()))] == 2
    assert got[("jobs_finished_total", frozenset({"job": fail, "state": "FAILURE"}.items()))] == 1
    assert got[retried] == 1
    assert got[("jobs_runtime_seconds_count", frozenset({"job": add}.items()))] == 2
    assert got[("jobs_workers_online", frozenset())] >= 1
    assert ("jobs_queue_messages", frozenset({"queue": "default", "state": "delayed"}.items())) in got


def test_the_view_needs_the_permission(client, staff_client):
    assert client.get("/metrics/").status_code == 403
    assert staff_client().get("/metrics/").status_code == 403


@pytest.mark.django_db
def test_the_view_shows_results_queues_workers_and_dead_letters(staff_client):
    JobRecord.objects.create(job_id="m-1", name="shop.jobs.report", state="SUCCESS")
    JobRecord.objects.create(job_id="m-2", name="shop.jobs.report", state="SUCCESS")
    DeadLetter.objects.create(queue="default", reason="unknown job", body=b"{}")
    response = staff_client("view_jobrecord").get("/metrics/")
    assert response.status_code == 200
    got = samples(response.content.decode())
    assert got[("jobs_results", frozenset({"job": "shop.jobs.report", "state": "SUCCESS"}.items()))] == 2
    assert got[("jobs_dead_letters", frozenset())] == 1
    assert got[("jobs_workers_online", frozenset())] == 0
    assert ("jobs_queue_messages", frozenset({"queue": "default", "state": "delayed"}.items())) in got


def test_an_exporter_that_raises_changes_no_outcome(monkeypatch, caplog):
    from jobs.middleware import metrics as middleware
    from jobs.outcome import Kind, Outcome

    class Broken:
        def count(self, outcome):
            raise RuntimeError("exporter broke")

    monkeypatch.setattr(middleware, "recorder", Broken())
    outcome = Outcome(Kind.SUCCEEDED, "j-1", "shop.jobs.report")
    assert middleware.Metrics().completed(None, None, outcome) is outcome
    assert "exporter broke" in caplog.text
