"""Housekeeping: expired rows are deleted by the running workers and schedulers, one pass at
a time, in short batches; ``manage.py jobs_cleanup`` does a pass at once."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext

from jobs import housekeeping
from jobs.checks import check_settings
from jobs.database import database
from jobs.housekeeping import Housekeeper, sweep
from jobs.models import DeadLetter, JobRecord, Lease, UniqueLock, Worker
from jobs.testing import running_worker
from jobs_beat.scheduler import Scheduler
from tests.conftest import wait_for

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)

pg = pytest.mark.pg


# Rows ----------------------------------------------------------------------------------------


def result(state: str = "SUCCESS", *, done: datetime | None) -> JobRecord:
    return JobRecord.objects.create(job_id=str(uuid.uuid4()), name="tests.job", state=state,
                                    date_created=(done or NOW) - timedelta(seconds=1),
                                    date_done=done)


def results(count: int, *, done: datetime, state: str = "SUCCESS") -> None:
    JobRecord.objects.bulk_create(
        JobRecord(job_id=str(uuid.uuid4()), name="tests.job", state=state, date_done=done)
        for _ in range(count))


def dead_letter(*, created: datetime) -> DeadLetter:
    return DeadLetter.objects.create(queue="default", reason="unregistered job 'x'", body=b"{}",
                                     date_created=created)


def worker_row(*, last_seen: datetime, stopped_at: datetime | None = None) -> Worker:
    return Worker.objects.create(hostname=f"host-{uuid.uuid4().hex[:6]}", pid=1, pool="solo",
                                 concurrency=1, started_at=last_seen - DAY,
                                 last_seen=last_seen, stopped_at=stopped_at)


def lock(*, expires_at: datetime) -> UniqueLock:
    return UniqueLock.objects.create(key=uuid.uuid4().hex, name="tests.job",
                                     job_id=str(uuid.uuid4()), expires_at=expires_at)


def exists(row) -> bool:
    return type(row).objects.filter(pk=row.pk).exists()


def cleanup(*args: str) -> str:
    out = StringIO()
    call_command("jobs_cleanup", *args, stdout=out)
    return out.getvalue()


# What is deleted, and what is kept ----------------------------------------------------------


@pg
@pytest.mark.django_db
def test_groups_made_before_result_expires_are_deleted():
    from jobs.models import GroupRecord

    old = GroupRecord.objects.create(group_id="old", date_created=NOW - 2 * DAY)
    recent = GroupRecord.objects.create(group_id="recent", date_created=NOW - DAY / 2)
    report = sweep(NOW)
    assert (exists(old), exists(recent)) == (False, True)
    assert report.deleted["job groups"] == 1


@pg
@pytest.mark.django_db
def test_finished_results_older_than_result_expires_are_deleted():
    old = [result(state, done=NOW - 2 * DAY) for state in ("SUCCESS", "FAILURE", "REVOKED")]
    report = sweep(NOW)
    assert not any(exists(row) for row in old)
    assert report.deleted["job results"] == 3
    assert report.finished


@pg
@pytest.mark.django_db
def test_recent_and_unfinished_results_are_kept():
    recent = result("SUCCESS", done=NOW - timedelta(hours=23))
    retrying = result("RETRY", done=NOW - 2 * DAY)
    started = result("STARTED", done=None)
    custom = result("PROGRESS", done=NOW - 2 * DAY)
    sweep(NOW)
    assert all(exists(row) for row in (recent, retrying, started, custom))


@pg
@pytest.mark.django_db
def test_result_expires_may_be_seconds(settings):
    settings.JOBS = {**settings.JOBS, "RESULT_EXPIRES": 60}
    old, recent = result(done=NOW - timedelta(seconds=61)), result(done=NOW - timedelta(seconds=59))
    sweep(NOW)
    assert not exists(old)
    assert exists(recent)


@pg
@pytest.mark.django_db
@pytest.mark.parametrize("keep", [None, 0])
def test_results_are_kept_for_ever_with_result_expires_none_or_zero(settings, keep):
    settings.JOBS = {**settings.JOBS, "RESULT_EXPIRES": keep}
    ancient = result(done=NOW - 1000 * DAY)
    report = sweep(NOW)
    assert exists(ancient)
    assert "job results" not in report.deleted


@pg
@pytest.mark.django_db
def test_dead_letters_older_than_dead_letter_expires_are_deleted():
    old, recent = dead_letter(created=NOW - 31 * DAY), dead_letter(created=NOW - 29 * DAY)
    report = sweep(NOW)
    assert not exists(old)
    assert exists(recent)
    assert report.deleted["dead letters"] == 1


@pg
@pytest.mark.django_db
def test_dead_letters_are_kept_with_dead_letter_expires_none(settings):
    settings.JOBS = {**settings.JOBS, "DEAD_LETTER_EXPIRES": None}
    ancient = dead_letter(created=NOW - 1000 * DAY)
    sweep(NOW)
    assert exists(ancient)


@pg
@pytest.mark.django_db
def test_workers_stopped_or_unseen_for_a_day_are_deleted():
    stopped = worker_row(last_seen=NOW - DAY - timedelta(minutes=1),
                         stopped_at=NOW - DAY - timedelta(minutes=1))
    vanished = worker_row(last_seen=NOW - 2 * DAY)  # killed: it never wrote stopped_at
    stopped_lately = worker_row(last_seen=NOW - timedelta(hours=2),
                                stopped_at=NOW - timedelta(hours=2))
    online = worker_row(last_seen=NOW - timedelta(seconds=3))
    report = sweep(NOW)
    assert not exists(stopped) and not exists(vanished)
    assert exists(stopped_lately) and exists(online)
    assert report.deleted["workers"] == 2


@pg
@pytest.mark.django_db
def test_expired_unique_locks_are_deleted_and_live_ones_kept():
    expired, live = lock(expires_at=NOW - timedelta(seconds=1)), lock(expires_at=NOW + DAY)
    report = sweep(NOW)
    assert not exists(expired)
    assert exists(live)
    assert report.deleted["unique locks"] == 1


# Batches and the time budget ----------------------------------------------------------------


@pg
@pytest.mark.django_db
def test_a_pass_deletes_in_batches_of_rows_selected_by_id(monkeypatch):
    monkeypatch.setattr(housekeeping, "BATCH", 10)
    results(35, done=NOW - 2 * DAY)
    keep = result(done=NOW)
    with CaptureQueriesContext(connection) as queries:
        report = sweep(NOW)
    assert report.deleted["job results"] == 35 and report.finished
    deletes = [q["sql"] for q in queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 4  # 10 + 10 + 10 + 5
    assert all(" IN (" in sql for sql in deletes)
    assert exists(keep)


@pg
@pytest.mark.django_db
def test_a_pass_out_of_time_stops_and_the_next_goes_on_at_once(monkeypatch):
    monkeypatch.setattr(housekeeping, "BATCH", 10)
    results(25, done=NOW - 2 * DAY)
    passes = []
    clock = NOW
    while not passes or not passes[-1].finished:
        # No time at all: one batch per pass. The next pass is due at once, not a minute on.
        passes.append(sweep(clock, budget=0))
        clock += timedelta(seconds=1)
        assert len(passes) < 10
    assert [p.deleted["job results"] for p in passes] == [10, 10, 5]
    assert [p.finished for p in passes] == [False, False, True]
    assert not JobRecord.objects.exists()


@pg
@pytest.mark.django_db
def test_a_backlog_of_results_does_not_hold_up_the_other_kinds(monkeypatch):
    monkeypatch.setattr(housekeeping, "BATCH", 10)
    results(50, done=NOW - 2 * DAY)
    letters = [dead_letter(created=NOW - 40 * DAY) for _ in range(3)]
    report = sweep(NOW, budget=0)
    assert not any(exists(letter) for letter in letters)
    assert not report.finished


# The lease: one pass at a time, about once an interval ---------------------------------------


@pg
@pytest.mark.django_db
def test_the_next_pass_is_due_an_interval_after_the_last():
    assert sweep(NOW) is not None
    result(done=NOW - 2 * DAY)
    assert sweep(NOW + timedelta(seconds=30)) is None
    report = sweep(NOW + timedelta(seconds=housekeeping.INTERVAL + 1))
    assert report.deleted["job results"] == 1


@pg
@pytest.mark.django_db
def test_no_pass_starts_while_another_holds_the_lease():
    Lease.objects.claim("housekeeping", "elsewhere:1", NOW + housekeeping.HOLD, NOW)
    old = result(done=NOW - 2 * DAY)
    assert sweep(NOW, due_only=False) is None
    assert exists(old)
    # A holder that died frees it once its claim runs out.
    assert sweep(NOW + housekeeping.HOLD, due_only=False) is not None
    assert not exists(old)


@pg
@pytest.mark.django_db(transaction=True)
def test_of_two_passes_started_together_one_does_the_work():
    results(20, done=NOW - 2 * DAY)
    start = threading.Barrier(2)
    reports = []

    def race():
        start.wait()
        try:
            reports.append(sweep(NOW))
        finally:
            connection.close()

    threads = [threading.Thread(target=race) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    done = [r for r in reports if r is not None]
    assert len(reports) == 2 and len(done) == 1
    assert done[0].deleted["job results"] == 20


@pg
@pytest.mark.django_db(transaction=True)
def test_a_pass_asked_for_now_waits_for_the_running_one(monkeypatch):
    results(5, done=NOW - 2 * DAY)
    inside, go_on = threading.Event(), threading.Event()
    real_delete = housekeeping._delete
    first: list = []

    def slow_delete(*args, **kwargs):
        inside.set()
        go_on.wait(10)
        return real_delete(*args, **kwargs)

    def running():
        try:
            first.append(sweep(NOW))
        finally:
            connection.close()

    monkeypatch.setattr(housekeeping, "_delete", slow_delete)
    thread = threading.Thread(target=running)
    thread.start()
    assert inside.wait(10)
    monkeypatch.setattr(housekeeping, "_delete", real_delete)
    try:
        assert sweep(NOW, due_only=False) is None  # not beside the running pass
        with pytest.raises(housekeeping.LeaseHeld):
            housekeeping.sweep_all(wait=0)
    finally:
        go_on.set()
        thread.join(30)
    assert first[0].deleted["job results"] == 5


# manage.py jobs_cleanup ------------------------------------------------------------------------


@pg
@pytest.mark.django_db
def test_jobs_cleanup_dry_run_reports_counts_and_deletes_nothing():
    now = datetime.now(UTC)
    results(3, done=now - 2 * DAY)
    letter = dead_letter(created=now - 31 * DAY)
    output = cleanup("--dry-run")
    assert "job results: 3 would be deleted" in output
    assert "dead letters: 1 would be deleted" in output
    assert "workers: 0 would be deleted" in output
    assert JobRecord.objects.count() == 3 and exists(letter)


@pg
@pytest.mark.django_db
def test_jobs_cleanup_deletes_at_once_and_reports(monkeypatch):
    monkeypatch.setattr(housekeeping, "BATCH", 10)
    now = datetime.now(UTC)
    sweep(now)  # a pass just ran: the next isn't due for a minute, but the command doesn't wait
    results(25, done=now - 2 * DAY)
    expired = lock(expires_at=now - timedelta(minutes=1))
    output = cleanup()
    assert "job results: 25 deleted" in output
    assert "unique locks: 1 deleted" in output
    assert not JobRecord.objects.exists() and not exists(expired)


@pg
@pytest.mark.django_db
def test_jobs_cleanup_says_what_it_keeps(settings):
    settings.JOBS = {**settings.JOBS, "RESULT_EXPIRES": None}
    assert "job results: kept (JOBS['RESULT_EXPIRES'] is None)" in cleanup("--dry-run")


# From the running system ---------------------------------------------------------------------


@pytest.fixture
def often(monkeypatch):
    """Passes every few hundredths of a second instead of every minute."""
    monkeypatch.setattr(housekeeping, "INTERVAL", 0.05)


@pg
def test_a_running_worker_deletes_expired_rows_by_itself(transactional_db, often):
    old = result(done=datetime.now(UTC) - 2 * DAY)
    with running_worker():
        wait_for(lambda: not exists(old), timeout=20,
                 message="the worker did not delete the expired result")


@pg
def test_a_running_scheduler_deletes_expired_rows_by_itself(transactional_db, often):
    old = lock(expires_at=datetime.now(UTC) - timedelta(minutes=1))
    stop = threading.Event()
    beat = threading.Thread(target=Scheduler(tick=0.05, sync_settings=False).run, args=(stop,))
    beat.start()
    try:
        wait_for(lambda: not exists(old), timeout=20,
                 message="the scheduler did not delete the expired lock")
    finally:
        stop.set()
        beat.join(30)


@pytest.mark.django_db
def test_a_database_outage_during_a_pass_is_reported_and_never_raises(monkeypatch, often):
    reported = []

    def lost(now=None, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(housekeeping, "sweep", lost)
    monkeypatch.setattr(database, "failed", lambda exc: reported.append(exc) or True)
    housekeeper = Housekeeper()
    wait_for(lambda: housekeeper.maybe_run() is None and reported, timeout=5)
    assert isinstance(reported[0], OperationalError)


# Settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, 0, 3600, 0.5, timedelta(days=7)])
def test_dead_letter_expires_takes_a_timedelta_seconds_or_none(settings, value):
    settings.JOBS = {"DEAD_LETTER_EXPIRES": value}
    assert [e.id for e in check_settings()] == []


@pytest.mark.parametrize("value", ["30 days", -1, True, timedelta(days=-1), float("inf")])
def test_a_bad_dead_letter_expires_is_an_error(settings, value):
    settings.JOBS = {"DEAD_LETTER_EXPIRES": value}
    assert [e.id for e in check_settings()] == ["jobs.E040"]


def test_a_negative_result_expires_is_an_error(settings):
    settings.JOBS = {"RESULT_EXPIRES": -60}
    assert [e.id for e in check_settings()] == ["jobs.E010"]
