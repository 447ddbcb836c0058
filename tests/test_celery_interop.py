"""Celery and jobs share a queue: Celery's messages run on jobs_worker, and ours run on a
Celery worker that has a task of the same name. The real ``celery`` package, on Redis and
RabbitMQ (the database broker is ours alone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from jobs.models import DeadLetter, JobRecord
from project.demo import jobs as demo
from tests.conftest import ROOT, TEST_TRANSPORT_OPTIONS, wait_for

celery = pytest.importorskip("celery")

pytestmark = pytest.mark.e2e
brokers = pytest.mark.parametrize("broker_url", ["redis", "amqp"], indirect=True)


def transport_options(broker_url: str) -> dict:
    """This session's Redis key prefix (RabbitMQ: the virtual host is in the URL)."""
    return TEST_TRANSPORT_OPTIONS if broker_url.startswith("redis") else {}


@pytest.fixture
def celery_app(broker_url):
    """A Celery producer on the queue our workers read."""
    app = celery.Celery("producer", broker=broker_url)
    app.conf.update(broker_transport_options=transport_options(broker_url),
                    task_default_queue="default", result_backend=None)
    yield app
    app.close()


def send(app, *args, **options):
    return app.send_task(*args, queue="default", **options)


@brokers
def test_a_celery_task_runs_on_a_jobs_worker_with_its_args_and_kwargs(
        broker_url, celery_app, start_worker):
    start_worker(broker_url, "-c", "1")
    sent = send(celery_app, "project.demo.jobs.add", args=(2,), kwargs={"y": 3})

    row = wait_for(lambda: JobRecord.objects.filter(job_id=sent.id, state="SUCCESS").first(),
                   message="Celery's message did not run")
    assert (row.name, row.args, row.kwargs, row.result) == (
        "project.demo.jobs.add", [2], {"y": 3}, 5)


@brokers
def test_celerys_retries_count_reaches_the_job(broker_url, celery_app, start_worker):
    start_worker(broker_url, "-c", "1")
    sent = send(celery_app, "tests.jobs_app.jobs.whoami", retries=2)

    row = wait_for(lambda: JobRecord.objects.filter(job_id=sent.id, state="SUCCESS").first())
    assert row.result["retries"] == 2
    assert row.retries == 2


@brokers
def test_a_celery_task_with_a_countdown_waits_for_its_eta(broker_url, celery_app, start_worker):
    start_worker(broker_url, "-c", "1")
    sent_at = time.monotonic()
    sent = send(celery_app, "project.demo.jobs.add", args=(1, 1), countdown=2)

    wait_for(lambda: JobRecord.objects.filter(job_id=sent.id, state="SUCCESS").exists(), timeout=30)
    assert time.monotonic() - sent_at >= 1.9


@brokers
def test_an_expired_celery_task_does_not_run(broker_url, celery_app, start_worker):
    expired = send(celery_app, "project.demo.jobs.add", args=(1, 1), expires=0.5)
    time.sleep(1)
    start_worker(broker_url, "-c", "1")
    after = send(celery_app, "project.demo.jobs.add", args=(2, 2))

    wait_for(lambda: JobRecord.objects.filter(job_id=after.id, state="SUCCESS").exists())
    row = JobRecord.objects.filter(job_id=expired.id).first()
    if broker_url.startswith("redis"):
        assert (row.state, row.date_started) == ("REVOKED", None)
        assert "expired at" in row.result["exc_message"][0]
    else:  # Celery gives the message a time to live as well, and RabbitMQ drops it unseen
        assert row is None


@brokers
def test_a_celery_task_no_job_has_is_dead_lettered(broker_url, celery_app, start_worker):
    start_worker(broker_url, "-c", "1")
    sent = send(celery_app, "billing.tasks.charge", args=(1,))

    letter = wait_for(lambda: DeadLetter.objects.filter(job_id=sent.id).first())
    assert letter.reason.startswith("unregistered job 'billing.tasks.charge'")


@brokers
def test_a_celery_producers_link_runs_on_a_jobs_worker(broker_url, celery_app, start_worker):
    start_worker(broker_url, "-c", "1")
    link = celery_app.signature("tests.jobs_app.jobs.mul", args=(10,))
    sent = send(celery_app, "project.demo.jobs.add", args=(2, 3), link=link)

    row = wait_for(lambda: JobRecord.objects.filter(
        name="tests.jobs_app.jobs.mul", parent_id=sent.id, state="SUCCESS").first(),
        message="the link of Celery's message did not run")
    assert (row.args, row.result, row.root_id) == ([5, 10], 50, sent.id)


@brokers
def test_a_celery_producers_link_error_runs_on_a_jobs_worker(broker_url, celery_app,
                                                             start_worker):
    start_worker(broker_url, "-c", "1")
    errback = celery_app.signature("tests.jobs_app.jobs.noted_failure")
    sent = send(celery_app, "project.demo.jobs.fail", args=("no",), link_error=errback)

    row = wait_for(lambda: JobRecord.objects.filter(
        name="tests.jobs_app.jobs.noted_failure", state="SUCCESS").first())
    assert row.result == sent.id


@brokers
def test_a_celery_producers_chain_runs_on_a_jobs_worker(broker_url, celery_app, start_worker):
    start_worker(broker_url, "-c", "1")
    steps = celery.chain(celery_app.signature("project.demo.jobs.add", args=(1, 2)),
                         celery_app.signature("tests.jobs_app.jobs.mul", args=(10,)),
                         celery_app.signature("project.demo.jobs.add", args=(5,)))
    last = steps.apply_async(queue="default")

    row = wait_for(lambda: JobRecord.objects.filter(job_id=last.id, state="SUCCESS").first(),
                   message="Celery's chain did not reach its last step")
    assert row.result == 35
    assert JobRecord.objects.get(job_id=last.parent.id).result == 30


# Our messages on a Celery worker -------------------------------------------------------------


#: A queue only the Celery worker consumes.
CELERY_ONLY = "celery-side"


@pytest.fixture
def celery_worker(broker_url, tmp_path):
    """A real ``celery worker`` (solo pool) with tests/celery_side.py, consuming 'default'
    and a queue of its own; its visibility timeout (60 s) outlasts the tests' tasks."""
    out = tmp_path / "celery-out"
    out.mkdir()
    log = tmp_path / "celery-worker.log"
    options = {**transport_options(broker_url), "visibility_timeout": 60}
    env = {**os.environ, "CELERY_SIDE_BROKER_URL": broker_url, "CELERY_SIDE_OUT": str(out),
           "CELERY_SIDE_TRANSPORT_OPTIONS": json.dumps(options)}
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.celery_side", "worker", "-P", "solo",
             "-Q", f"default,{CELERY_ONLY}", "--without-heartbeat", "--without-mingle", "--without-gossip",
             "-l", "INFO"], cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "ready." in log.read_text() or process.poll() is not None, timeout=30,
                 message="the Celery worker did not start")
        assert process.poll() is None, log.read_text()
        yield out
    finally:
        process.kill()  # nothing of ours is left running in it
        process.wait(10)
        print(log.read_text())


def note(out, job_id: str) -> dict:
    path = out / f"{job_id}.json"
    wait_for(path.exists, timeout=20, message=f"the Celery worker did not run {job_id}")
    return json.loads(path.read_text())


@brokers
def test_a_job_runs_on_a_celery_worker_with_a_task_of_its_name(broker_url, celery_worker):
    handle = demo.add.apply_async((2,), {"y": 40})

    received = note(celery_worker, handle.id)
    assert (received["result"], received["args"]) == (42, [2, 40])
    assert received["root_id"] == handle.id


@brokers
def test_jobs_sent_in_bulk_run_on_a_celery_worker(broker_url, celery_worker):
    handles = demo.add.delay_many([(i, 40) for i in range(3)])

    for i, handle in enumerate(handles):
        received = note(celery_worker, handle.id)
        assert (received["result"], received["args"]) == (i + 40, [i, 40])
        assert received["root_id"] == handle.id


@brokers
def test_a_delayed_job_runs_on_a_celery_worker_at_its_eta(broker_url, celery_worker):
    sent_at = datetime.now(UTC)
    handle = demo.add.apply_async((1, 2), countdown=1.5)

    received = note(celery_worker, handle.id)
    assert received["result"] == 3
    eta = datetime.fromisoformat(received["eta"])
    assert timedelta(seconds=1.4) < eta - sent_at < timedelta(seconds=1.6)
    assert datetime.fromisoformat(received["ran_at"]) >= eta


@brokers
def test_a_long_acks_late_celery_task_beside_a_jobs_worker_runs_once(
        broker_url, celery_app, celery_worker, start_worker):
    """The jobs worker (visibility timeout 4 s, restoring every second) never hands back a
    message the Celery worker took: the 8 s task runs once, however long it outlasts our
    timeout."""
    start_worker(broker_url, "-c", "1")
    long = send_to_celery(celery_app, "celery_side.long", args=(8,))
    runs = celery_worker / f"{long.id}.runs"
    wait_for(runs.exists, message="the Celery worker did not start the long task")

    # Sent after the long task started: a copy handed back meanwhile would run before it.
    marker = send_to_celery(celery_app, "project.demo.jobs.add", args=(1, 1))
    assert note(celery_worker, marker.id)["result"] == 2
    assert len(runs.read_text().splitlines()) == 1
    assert not JobRecord.objects.filter(job_id=long.id).exists()
    assert not DeadLetter.objects.filter(job_id=long.id).exists()


def send_to_celery(app, name, **options):
    return app.send_task(name, queue=CELERY_ONLY, **options)


@brokers
def test_a_jobs_chain_runs_on_a_celery_worker(broker_url, celery_worker):
    last = (demo.add.s(1, 2) | demo.add.s(3) | demo.add.s(4)).delay()
    first, middle = last.parent.parent, last.parent

    assert note(celery_worker, first.id)["result"] == 3
    assert note(celery_worker, middle.id)["args"] == [3, 3]
    received = note(celery_worker, last.id)
    assert (received["args"], received["result"]) == ([6, 4], 10)
    assert (received["parent_id"], received["root_id"]) == (middle.id, first.id)
