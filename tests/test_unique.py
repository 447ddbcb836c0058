"""Unique jobs: a call that is already queued or running is not sent again."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from jobs import JobResult, job
from jobs.exceptions import ConfigurationError, PublishError
from jobs.models import UniqueLock
from jobs.testing import capture_jobs
from project.demo import jobs as demo
from tests.conftest import wait_for
from tests.jobs_app import jobs as testjobs

pytestmark = pytest.mark.django_db


@job(unique=True)
def rebuild_index(shop_id, full=False):
    return shop_id


@job(unique_key=lambda user_id, message: user_id)
def notify(user_id, message):
    return message


@job(unique=True, unique_for=60)
def short_lock(x):
    return x


@job(bind=True, unique=True)
def bound_unique(self, x):
    return x


def test_a_second_call_while_the_first_is_queued_gets_the_first_handle():
    with capture_jobs() as captured:
        first = rebuild_index.delay(7)
        second = rebuild_index.delay(7)

    assert second == first
    assert isinstance(second, JobResult)
    assert [m.id for m in captured.messages] == [first.id]


def test_different_arguments_are_different_jobs():
    with capture_jobs() as captured:
        rebuild_index.delay(7)
        rebuild_index.delay(8)
        rebuild_index.delay(7, full=True)

    assert [m.args for m in captured.messages] == [(7,), (8,), (7,)]


def test_positional_keyword_and_default_arguments_name_the_same_call():
    with capture_jobs() as captured:
        first = rebuild_index.delay(7)
        assert rebuild_index.delay(shop_id=7) == first
        assert rebuild_index.delay(7, False) == first

    assert len(captured) == 1


def test_a_bound_job_is_unique_by_its_arguments_without_self():
    with capture_jobs() as captured:
        assert bound_unique.delay(1) == bound_unique.delay(x=1)

    assert len(captured) == 1


def test_unique_key_decides_what_counts_as_the_same_call():
    with capture_jobs() as captured:
        first = notify.delay(1, "hello")
        assert notify.delay(1, "hello again") == first
        notify.delay(2, "hello")

    assert [m.args for m in captured.messages] == [(1, "hello"), (2, "hello")]


def test_the_lock_names_the_job_holding_it_and_expires():
    with capture_jobs():
        handle = short_lock.delay(1)

    lock = UniqueLock.objects.get()
    assert (lock.name, lock.job_id) == (short_lock.name, handle.id)
    assert timedelta(seconds=59) < lock.expires_at - timezone.now() <= timedelta(seconds=60)


def test_a_delayed_call_holds_its_lock_until_after_it_is_due():
    with capture_jobs():
        short_lock.apply_async((1,), countdown=3600)

    expires = UniqueLock.objects.get().expires_at - timezone.now()
    assert timedelta(seconds=3600 + 59) < expires <= timedelta(seconds=3600 + 60)


def test_the_default_lock_lasts_an_hour():
    with capture_jobs():
        rebuild_index.delay(1)

    expires = UniqueLock.objects.get().expires_at - timezone.now()
    assert timedelta(minutes=59) < expires <= timedelta(hours=1)


def test_an_expired_lock_is_taken_over():
    with capture_jobs() as captured:
        first = rebuild_index.delay(7)
        UniqueLock.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
        second = rebuild_index.delay(7)

    assert second != first
    assert [m.id for m in captured.messages] == [first.id, second.id]
    assert UniqueLock.objects.get().job_id == second.id


def test_a_lock_lasts_its_unique_for_seconds(jobs_clock):
    with capture_jobs() as captured:
        first = short_lock.delay(3)
        jobs_clock.advance(59)
        assert short_lock.delay(3) == first
        jobs_clock.advance(2)
        second = short_lock.delay(3)

    assert second != first
    assert [m.id for m in captured.messages] == [first.id, second.id]


def test_a_finished_job_frees_its_lock():
    with capture_jobs() as captured:
        rebuild_index.delay(7)
        captured.run_all()
        rebuild_index.delay(7)

    assert UniqueLock.objects.count() == 1
    assert len(captured) == 1


def test_revoking_a_queued_job_frees_its_lock():
    with capture_jobs() as captured:
        first = rebuild_index.delay(7)
        first.revoke()
        second = rebuild_index.delay(7)

    assert second != first
    assert [m.id for m in captured.messages] == [first.id, second.id]


def test_a_call_that_could_not_be_sent_frees_its_lock(monkeypatch):
    from jobs import broker

    def broker_down(envelope, **options):
        raise PublishError("could not send: connection refused")

    monkeypatch.setattr(broker, "publish", broker_down)
    with pytest.raises(PublishError):
        rebuild_index.delay(7)

    assert not UniqueLock.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_takes_no_lock():
    with capture_jobs():
        with pytest.raises(RuntimeError), transaction.atomic():
            rebuild_index.delay(7)
            raise RuntimeError("roll back")

    assert not UniqueLock.objects.exists()


def test_delay_many_sends_each_distinct_call_once():
    with capture_jobs() as captured:
        handles = rebuild_index.delay_many([(1,), (2,), (1,)])

    assert handles[0] == handles[2] != handles[1]
    assert [m.args for m in captured.messages] == [(1,), (2,)]


def test_jobs_that_are_not_unique_take_no_lock():
    with capture_jobs() as captured:
        demo.add.delay(1, 1)
        demo.add.delay(1, 1)

    assert len(captured) == 2
    assert not UniqueLock.objects.exists()


def test_eager_mode_runs_every_call(jobs_eager):
    assert rebuild_index.delay(7).get() == 7
    assert rebuild_index.delay(7).get() == 7
    assert not UniqueLock.objects.exists()


def test_unique_for_and_unique_key_imply_unique():
    assert short_lock.unique is True
    assert notify.unique is True
    assert demo.add.unique is False


@pytest.mark.parametrize("options, message", [
    ({"unique": "yes"}, "unique='yes' must be True or False"),
    ({"unique_for": 0}, "unique_for=0 must be a positive number"),
    ({"unique_for": "1h"}, "unique_for='1h' must be a positive number"),
    ({"unique_key": "user_id"}, "unique_key must be a callable"),
])
def test_bad_unique_options_are_errors_at_declaration(options, message):
    with pytest.raises(ConfigurationError, match=message):
        @job(**options)
        def badly_unique():
            pass


@pytest.mark.e2e
@pytest.mark.parametrize("broker_url", [pytest.param("django", marks=pytest.mark.pg)],
                         indirect=True)
def test_a_worker_frees_the_lock_when_the_job_ends(broker_url, start_worker):
    first = testjobs.refresh_report.delay(1, 0.5)
    assert testjobs.refresh_report.delay(1, 0.5) == first
    start_worker(broker_url, "-c", "1")

    assert first.get(timeout=20) == 1
    wait_for(lambda: not UniqueLock.objects.exists(), timeout=5,
             message="the lock outlived its job")
    again = testjobs.refresh_report.delay(1)
    assert again != first
    assert again.get(timeout=20) == 1
