"""Job middleware: a project's own class in JOBS["MIDDLEWARE"] can refuse a job, change an
outcome, or watch; observers (signal receivers, observer hooks) never change an outcome.
Run with a real worker in this process (jobs.testing.running_worker)."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from datetime import timedelta

import pytest
from django.dispatch import Signal
from django.utils import timezone

from jobs import job, signals
from jobs.broker import get_broker
from jobs.conf import DEFAULT_MIDDLEWARE
from jobs.exceptions import JobsError
from jobs.messages import encode
from jobs.middleware import Middleware
from jobs.models import DeadLetter, JobRecord
from jobs.outcome import Kind
from jobs.testing import running_worker
from tests.conftest import broker_params, wait_for

runs: Counter = Counter()


@job
def counted(key):
    runs[key] += 1
    return key


@job(bind=True)
def retried_once(self, key):
    runs[key] += 1
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return self.request.retries


@job
def picky(value):
    if value == "bad":
        raise ValueError("bad value")
    return value


class RefuseSecrets(Middleware):
    """Dead-letters any job called with the argument "secret", in the worker."""

    def receive(self, worker, delivery):
        if b'"secret"' in delivery.body:
            worker.dead_letter(delivery, "refused: secrets are not sent to jobs")
            return None
        return delivery


class NoBadValues(Middleware):
    """Refuses a call of ``picky`` with "bad" where it is made."""

    def before_publish(self, job, envelope, options):
        if job.name == picky.name and envelope.message.args == ("bad",):
            raise JobsError("picky: 'bad' is refused")
        return envelope


class ForgiveValueErrors(Middleware):
    """Turns a ValueError into a success with the value "forgiven"."""

    def execute(self, execution, call_next):
        outcome = call_next(execution)
        if outcome.kind is Kind.FAILED and isinstance(outcome.exception, ValueError):
            return execution.outcome(Kind.SUCCEEDED, value="forgiven", runtime=outcome.runtime)
        return outcome


class BrokenObserver(Middleware):
    def started(self, execution):
        raise RuntimeError("observer bug in started")

    def finished(self, execution, outcome):
        raise RuntimeError("observer bug in finished")


def with_middleware(settings, *paths):
    settings.JOBS = {**settings.JOBS, "MIDDLEWARE": [*DEFAULT_MIDDLEWARE, *paths]}


def _raise(**kwargs):
    raise RuntimeError("receiver bug")


@pytest.fixture
def caplog(caplog, monkeypatch):
    """caplog, seeing the jobs loggers (which don't propagate in the project's settings)."""
    monkeypatch.setattr(logging.getLogger("jobs"), "propagate", True)
    return caplog


@pytest.fixture
def raising_receivers():
    hooked = [value for value in vars(signals).values() if isinstance(value, Signal)]
    assert len(hooked) == 10  # every job_* and worker_* signal
    for signal in hooked:
        signal.connect(_raise, dispatch_uid="test-raising")
    yield
    for signal in hooked:
        signal.disconnect(dispatch_uid="test-raising")


@pytest.mark.parametrize("broker_url", broker_params(), indirect=True)
def test_a_receiver_that_raises_changes_no_outcome_and_reruns_nothing(
        broker_url, raising_receivers, caplog):
    key = f"observed-{broker_url[:5]}"
    with running_worker() as worker:
        first = counted.delay(key)
        assert first.get(timeout=20) == key
        assert picky.delay("bad").get(timeout=20, propagate=False) is not None
        assert retried_once.delay(key + "-retried").get(timeout=20) == 1
        revoked = counted.apply_async((key + "-revoked",), countdown=0.5)
        revoked.revoke()
        unknown = send_unregistered()
        last = counted.delay(key + "-last")
        assert last.get(timeout=20) == key + "-last"
        wait_for(lambda: revoked.state == "REVOKED", message="not revoked")
        wait_for(lambda: DeadLetter.objects.filter(job_id=unknown).exists(),
                 message="not dead-lettered")
        wait_for(lambda: worker.processed == 6 and not worker._inflight,
                 message="the worker did not settle")
    assert (runs[key], runs[key + "-retried"], runs[key + "-revoked"]) == (1, 2, 0)
    assert JobRecord.objects.get(job_id=first.id).state == "SUCCESS"
    assert JobRecord.objects.get(job_id=first.id).deliveries == 1
    assert "receiver bug" in caplog.text


def send_unregistered() -> str:
    """A message naming a job no worker has (it is dead-lettered); returns its id."""
    envelope = counted.prepare(("x",), {})
    message = dataclasses.replace(envelope.message, name="nowhere.to.be.found")
    get_broker().publish(encode(message, "json"), on_commit=False)
    return message.id


def test_an_observer_hook_that_raises_is_logged_and_changes_nothing(
        transactional_db, settings, caplog):
    with_middleware(settings, f"{__name__}.BrokenObserver")
    with running_worker() as worker:
        result = counted.delay("watched")
        assert result.get(timeout=20) == "watched"
        wait_for(lambda: not worker._inflight)
    assert runs["watched"] == 1
    assert "BrokenObserver.finished raised" in caplog.text
    assert "observer bug in finished" in caplog.text  # with its traceback


def test_a_middleware_can_refuse_a_job_in_the_worker(transactional_db, settings):
    with_middleware(settings, f"{__name__}.RefuseSecrets")
    with running_worker():
        refused = counted.delay("secret")
        allowed = counted.delay("public")
        assert allowed.get(timeout=20) == "public"
        letter = wait_for(lambda: DeadLetter.objects.filter(job_id=refused.id).first())
    assert letter.reason == "refused: secrets are not sent to jobs"
    assert runs["secret"] == 0
    assert refused.state == "PENDING"


def test_a_middleware_can_refuse_a_call_where_it_is_made(transactional_db, settings,
                                                         jobs_captured):
    with_middleware(settings, f"{__name__}.NoBadValues")
    with pytest.raises(JobsError, match="'bad' is refused"):
        picky.delay("bad")
    picky.delay("good")
    assert [m.args for m in jobs_captured.messages] == [("good",)]


def test_a_middleware_can_change_an_outcome(transactional_db, settings):
    with_middleware(settings, f"{__name__}.ForgiveValueErrors")
    with running_worker():
        assert picky.delay("bad").get(timeout=20) == "forgiven"


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_jobs_run_and_fail_on_the_in_process_pools(transactional_db, pool):
    with running_worker(pool=pool, concurrency=2):
        assert counted.delay(f"on-{pool}").get(timeout=20) == f"on-{pool}"
        failed = picky.delay("bad")
        with pytest.raises(ValueError, match="bad value"):
            failed.get(timeout=20)
    assert failed.state == "FAILURE"


def test_a_middleware_path_that_cant_be_imported_fails_the_check(settings):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.JOBS = {**settings.JOBS, "MIDDLEWARE": [f"{__name__}.NoSuchThing"]}
    with pytest.raises(SystemCheckError, match="jobs.E030"):
        call_command("check")


def test_a_class_that_isnt_middleware_fails_the_check(settings):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.JOBS = {**settings.JOBS, "MIDDLEWARE": ["collections.Counter"]}
    with pytest.raises(SystemCheckError, match="jobs.E030"):
        call_command("check")


def test_leaving_out_the_results_middleware_is_a_warning(settings):
    from django.core.checks import run_checks

    settings.JOBS = {**settings.JOBS, "MIDDLEWARE": [
        p for p in DEFAULT_MIDDLEWARE if not p.endswith("Results")]}
    assert "jobs.W030" in [m.id for m in run_checks()]


@pytest.mark.parametrize("broker_url", broker_params(), indirect=True)
def test_a_job_due_within_a_second_waits_for_its_time(broker_url):
    with running_worker():
        sent = timezone.now()
        result = counted.apply_async(("soon",), countdown=0.6)
        assert result.get(timeout=20) == "soon"
    assert JobRecord.objects.get(job_id=result.id).date_started >= sent + timedelta(seconds=0.6)
