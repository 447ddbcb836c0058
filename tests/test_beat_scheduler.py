"""The scheduler: one run per due time, missed runs, edits behind the model's back, settings.

Most tests tick an in-process scheduler with a fixed clock and capture what it sends; the
last ones run real ``jobs_beat`` processes side by side against the test database.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.core.checks import run_checks
from django.db import connection
from django.utils import timezone

from jobs.display import payload_headers
from jobs.models import Message
from jobs_beat import crontab
from jobs_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    MissedRuns,
    PeriodicTask,
)
from jobs_beat.scheduler import DUE_HEADER, TASK_HEADER, Scheduler
from jobs_beat.sync import sync_schedule
from tests import factories
from tests.conftest import wait_for
from tests.factories import every

pytestmark = pytest.mark.pg

ADD = "project.demo.jobs.add"
DUE = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)


def periodic(name: str | None = None, *, due: datetime | None = DUE, **fields) -> PeriodicTask:
    """A saved periodic task (``add(2, 3)`` every 10 s unless told), due at ``due``."""
    return factories.periodic_task(name, due=due, **fields)


def scheduler() -> Scheduler:
    beat = Scheduler(sync_settings=False)
    beat.reconcile()
    beat._next_reconcile = float("inf")  # tests reconcile when they say so
    return beat


def fresh(task: PeriodicTask) -> PeriodicTask:
    return PeriodicTask.objects.get(pk=task.pk)


# Sending due tasks ------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_due_task_is_sent_and_its_run_recorded(jobs_captured):
    task = periodic()
    now = DUE + timedelta(seconds=0.2)

    scheduler().tick(now)

    [message] = jobs_captured.messages
    assert (message.name, message.args, message.queue) == (ADD, (2, 3), "default")
    assert message.headers[TASK_HEADER] == task.name
    assert message.headers[DUE_HEADER] == DUE.isoformat()
    task = fresh(task)
    assert (task.total_run_count, task.last_run_at, task.last_job_id) == (1, now, message.id)
    assert task.next_run_at == DUE + timedelta(seconds=10)


@pytest.mark.django_db
def test_ticking_again_at_the_same_time_sends_nothing_more(jobs_captured):
    periodic()
    beat = scheduler()
    for _ in range(3):
        beat.tick(DUE + timedelta(seconds=0.2))
    assert len(jobs_captured) == 1


@pytest.mark.django_db
def test_a_task_not_yet_due_is_not_sent_and_the_scheduler_sleeps_until_it_is(jobs_captured):
    task = periodic()
    wait = scheduler().tick(DUE - timedelta(seconds=0.4))
    assert len(jobs_captured) == 0
    assert wait == pytest.approx(0.4)
    assert fresh(task).total_run_count == 0


@pytest.mark.django_db
def test_a_task_due_twice_while_ticking_is_sent_for_each_due_time(jobs_captured):
    periodic()
    beat = scheduler()
    beat.tick(DUE + timedelta(seconds=0.1))
    beat.tick(DUE + timedelta(seconds=10.1))
    assert [m.headers[DUE_HEADER] for m in jobs_captured.messages] == [
        DUE.isoformat(), (DUE + timedelta(seconds=10)).isoformat()]


@pytest.mark.django_db
def test_more_due_tasks_than_a_batch_are_all_sent_once(jobs_captured):
    tasks = [periodic(f"many-{i:03}") for i in range(250)]
    Scheduler(sync_settings=False, batch=100).tick(DUE + timedelta(seconds=1))
    assert sorted(m.headers[TASK_HEADER] for m in jobs_captured.messages) == [
        t.name for t in tasks]


@pytest.mark.django_db
def test_the_queue_priority_and_expiry_of_the_task_go_with_its_job(jobs_captured):
    periodic(queue="other", priority=7, expire_seconds=60)
    now = DUE + timedelta(seconds=0.5)
    scheduler().tick(now)
    [message] = jobs_captured.messages
    assert (message.queue, message.priority) == ("other", 7)
    assert now + timedelta(seconds=59) < message.expires <= now + timedelta(seconds=61)


@pytest.mark.django_db
def test_a_job_this_process_does_not_have_is_still_sent_by_name(jobs_captured):
    periodic(task="reports.jobs.weekly", args=[1], kwargs={"to": "ops"})
    scheduler().tick(DUE)
    [message] = jobs_captured.messages
    assert (message.name, message.args, message.kwargs) == ("reports.jobs.weekly", (1,),
                                                            {"to": "ops"})
    assert message.queue == "default"


@pytest.mark.django_db
def test_arguments_that_do_not_fit_the_job_skip_the_run_and_say_why(jobs_captured, caplog):
    task = periodic(args=[1, 2, 3])
    with caplog.at_level(logging.ERROR, logger="jobs.beat"):
        scheduler().tick(DUE)
    assert len(jobs_captured) == 0
    assert "add(): too many positional arguments" in caplog.text
    task = fresh(task)
    assert (task.total_run_count, task.next_run_at) == (0, DUE + timedelta(seconds=10))


@pytest.mark.django_db
def test_with_the_database_broker_the_message_row_is_written_with_the_run(settings):
    settings.JOBS = {**settings.JOBS, "BROKER_URL": "django://"}
    task = periodic()
    scheduler().tick(DUE)
    [row] = Message.objects.all()
    assert payload_headers(row)["id"] == fresh(task).last_job_id


@pytest.mark.django_db(transaction=True)
def test_a_run_that_cannot_be_sent_is_given_back_and_tried_again(settings, caplog):
    settings.JOBS = {**settings.JOBS, "BROKER_URL": "amqp://guest:guest@127.0.0.1:1//",
                     "TASK_PUBLISH_RETRY": False, "BROKER_CONNECTION_TIMEOUT": 1}
    task = periodic()
    with caplog.at_level(logging.ERROR, logger="jobs.beat"):
        scheduler().tick(DUE + timedelta(seconds=1))
    assert "it will be sent on the next tick" in caplog.text
    task = fresh(task)
    assert (task.next_run_at, task.total_run_count, task.last_job_id) == (DUE, 0, "")


# Missed runs, one-off and finished tasks ------------------------------------------------------


@pytest.mark.django_db
def test_after_an_hour_down_a_minutely_task_runs_once_then_keeps_its_grid(jobs_captured):
    task = periodic(interval=every(60))
    now = DUE + timedelta(hours=1, seconds=5)
    scheduler().tick(now)
    assert len(jobs_captured) == 1
    assert fresh(task).next_run_at == DUE + timedelta(hours=1, minutes=1)


@pytest.mark.django_db
def test_with_the_skip_policy_a_missed_run_is_skipped(jobs_captured):
    task = periodic(interval=every(60), missed_runs=MissedRuns.SKIP)
    scheduler().tick(DUE + timedelta(hours=1, seconds=5))
    assert len(jobs_captured) == 0
    task = fresh(task)
    assert (task.total_run_count, task.next_run_at) == (0, DUE + timedelta(hours=1, minutes=1))


@pytest.mark.django_db
def test_a_one_off_task_disables_itself_after_its_run(jobs_captured):
    task = periodic(one_off=True)
    beat = scheduler()
    beat.tick(DUE)
    beat.tick(DUE + timedelta(minutes=5))
    assert len(jobs_captured) == 1
    task = fresh(task)
    assert (task.enabled, task.next_run_at, task.total_run_count) == (False, None, 1)


@pytest.mark.django_db
def test_a_clocked_task_runs_once(jobs_captured):
    at = DUE + timedelta(hours=1)
    task = periodic(clocked=ClockedSchedule.objects.create(clocked_time=at), due=None)
    assert task.next_run_at == at
    beat = scheduler()
    beat.tick(at)
    beat.tick(at + timedelta(days=1))
    assert len(jobs_captured) == 1
    assert fresh(task).enabled is False


@pytest.mark.django_db
def test_a_task_past_its_end_time_stops_without_running(jobs_captured):
    task = periodic(end_time=DUE - timedelta(seconds=1))
    scheduler().tick(DUE)
    assert len(jobs_captured) == 0
    task = fresh(task)
    assert (task.enabled, task.next_run_at) == (False, None)


@pytest.mark.django_db
def test_a_crontab_task_runs_at_its_times(jobs_captured):
    task = periodic(crontab=CrontabSchedule.objects.create(minute="*/15"), due=DUE)
    scheduler().tick(DUE + timedelta(seconds=2))
    assert len(jobs_captured) == 1
    assert fresh(task).next_run_at == DUE + timedelta(minutes=15)


# Edits, from the admin or behind the model's back ------------------------------------------


@pytest.mark.django_db
def test_a_task_disabled_with_queryset_update_is_not_sent(jobs_captured):
    task = periodic()
    PeriodicTask.objects.filter(pk=task.pk).update(enabled=False)
    scheduler().tick(DUE)
    assert len(jobs_captured) == 0


@pytest.mark.django_db
def test_a_deleted_task_is_not_sent(jobs_captured):
    periodic().delete()
    scheduler().tick(DUE)
    assert len(jobs_captured) == 0


@pytest.mark.django_db
def test_arguments_changed_with_queryset_update_go_with_the_next_run(jobs_captured):
    task = periodic()
    PeriodicTask.objects.filter(pk=task.pk).update(args=[40, 2])
    scheduler().tick(DUE)
    assert jobs_captured.messages[0].args == (40, 2)


@pytest.mark.django_db
def test_a_schedule_changed_with_queryset_update_is_planned_again_by_the_reconcile():
    task = periodic(interval=every(3600), due=DUE + timedelta(hours=1))
    PeriodicTask.objects.filter(pk=task.pk).update(interval=every(5))
    now = DUE + timedelta(seconds=1)
    assert Scheduler(sync_settings=False).reconcile(now) == 1
    assert fresh(task).next_run_at == now + timedelta(seconds=5)


@pytest.mark.django_db
def test_an_interval_row_changed_with_queryset_update_is_planned_again():
    task = periodic(interval=IntervalSchedule.objects.create(every=2, period="hours"),
                    due=DUE + timedelta(hours=2))
    IntervalSchedule.objects.filter(pk=task.interval_id).update(every=1, period="seconds")
    Scheduler(sync_settings=False).reconcile(DUE)
    assert fresh(task).next_run_at == DUE + timedelta(seconds=1)


@pytest.mark.django_db
def test_a_stale_due_time_of_a_changed_schedule_is_planned_again_not_run(jobs_captured):
    task = periodic(interval=every(10))
    PeriodicTask.objects.filter(pk=task.pk).update(interval=every(3600))
    beat = Scheduler(sync_settings=False)
    beat._next_reconcile = float("inf")  # the due row itself shows the change
    beat.tick(DUE)
    assert len(jobs_captured) == 0
    assert fresh(task).next_run_at == DUE + timedelta(hours=1)


@pytest.mark.django_db
def test_a_task_enabled_again_with_queryset_update_does_not_run_the_times_it_was_off(
        jobs_captured):
    task = periodic()
    PeriodicTask.objects.filter(pk=task.pk).update(enabled=False)
    beat = scheduler()  # notices the change
    PeriodicTask.objects.filter(pk=task.pk).update(enabled=True)
    now = DUE + timedelta(days=7)
    beat.reconcile(now)
    beat.tick(now)
    assert len(jobs_captured) == 0
    assert fresh(task).next_run_at == now + timedelta(seconds=10)


@pytest.mark.django_db
def test_saving_a_stale_copy_of_a_task_does_not_undo_a_run_recorded_meanwhile(jobs_captured):
    task = periodic()
    scheduler().tick(DUE)  # the scheduler runs it while someone edits an older copy
    task.description = "edited"
    task.save()
    task = fresh(task)
    assert (task.description, task.total_run_count) == ("edited", 1)
    assert task.next_run_at == DUE + timedelta(seconds=10)


@pytest.mark.django_db
def test_saving_a_changed_schedule_plans_the_next_run_at_once():
    task = periodic(interval=every(3600), due=DUE)
    task.interval = every(5)
    before = timezone.now()
    task.save()
    assert before + timedelta(seconds=5) <= fresh(task).next_run_at <= timezone.now() + \
        timedelta(seconds=5)


# The cost of a tick ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_idle_tick_is_one_indexed_query_however_many_tasks(django_assert_num_queries):
    template = periodic("template", due=DUE + timedelta(days=1))
    PeriodicTask.objects.bulk_create([
        PeriodicTask(name=f"bulk-{i}", task=ADD, interval=template.interval,
                     plan=template.plan, next_run_at=DUE + timedelta(days=1, seconds=i))
        for i in range(5000)])
    beat = scheduler()
    with django_assert_num_queries(1) as queries:
        beat.tick(DUE)
    sql = queries.captured_queries[0]["sql"]
    assert '"next_run_at" <=' in sql and "LIMIT 1" in sql


# Several schedulers at once -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_schedulers_ticking_at_once_send_each_due_time_once(jobs_captured):
    tasks = [periodic(f"race-{i:02}") for i in range(40)]
    start = threading.Barrier(4)

    def race():
        try:
            for second in range(3):
                # All four tick each due time together, as processes sharing a clock do: a
                # thread that fell behind would otherwise tick a time the others had passed,
                # and a task's earlier due time is rightly never sent after a later one.
                start.wait()
                Scheduler(sync_settings=False).tick(DUE + timedelta(seconds=10 * second))
        finally:
            connection.close()

    threads = [threading.Thread(target=race) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # A task another scheduler held at that moment is skipped by a tick, not waited for: the
    # next tick sends it. One more, after the race, so every due time has had its tick.
    Scheduler(sync_settings=False).tick(DUE + timedelta(seconds=20))

    sent = [(m.headers[TASK_HEADER], m.headers[DUE_HEADER]) for m in jobs_captured.messages]
    assert len(sent) == len(set(sent)) == 3 * len(tasks)
    assert {fresh(t).total_run_count for t in tasks} == {3}


def sent_due_times(name: str) -> list[str]:
    """The due times of the messages the schedulers queued for task ``name``."""
    headers = [payload_headers(m) for m in Message.objects.all()]
    return [h[DUE_HEADER] for h in headers if h.get(TASK_HEADER) == name]


def test_two_scheduler_processes_send_each_due_time_once_and_one_takes_over(start_beat):
    tasks = [periodic(f"both-{i}", args=[i, i], interval=every(1), due=None) for i in range(3)]
    first, second = start_beat("--no-sync"), start_beat("--no-sync")
    wait_for(lambda: all(fresh(t).total_run_count >= 4 for t in tasks), timeout=30,
             message="the schedulers did not run the tasks")

    first.kill()  # the other one goes on alone
    counts = {t.pk: fresh(t).total_run_count for t in tasks}
    wait_for(lambda: all(fresh(t).total_run_count >= counts[t.pk] + 3 for t in tasks),
             timeout=15, message="the second scheduler did not take over")
    second.kill(signal.SIGTERM)

    for task in tasks:
        due = sent_due_times(task.name)
        assert len(due) == len(set(due)), f"a due time of {task.name} was sent twice"
        assert len(due) == fresh(task).total_run_count
    assert "sent project.demo.jobs.add" in second.output


def test_a_scheduler_stops_cleanly_on_sigterm(start_beat):
    beat = start_beat("--no-sync")
    beat.kill(signal.SIGTERM)
    assert beat.process.returncode == 0
    assert "stopped" in beat.output


# JOBS_BEAT_SCHEDULE ---------------------------------------------------------------------------


SEED = {"add-every-10s": {"task": ADD, "schedule": timedelta(seconds=10), "args": (16, 16)}}


@pytest.mark.django_db
def test_the_settings_schedule_becomes_periodic_tasks():
    sync_schedule({**SEED, "weekly": {
        "task": ADD, "args": [1, 2], "options": {"queue": "other", "expires": 300},
        "schedule": crontab(hour=7, minute=30, day_of_week=1, tz="Europe/Berlin")}})
    seed = PeriodicTask.objects.get(name="add-every-10s")
    assert (seed.task, seed.args, str(seed.interval)) == (ADD, [16, 16], "every 10 seconds")
    assert seed.from_settings and seed.enabled and seed.next_run_at is not None
    weekly = PeriodicTask.objects.get(name="weekly")
    assert weekly.crontab.expression == "30 7 * * 1"
    assert (weekly.crontab.timezone, weekly.queue, weekly.expire_seconds) == (
        "Europe/Berlin", "other", 300)


@pytest.mark.django_db
def test_syncing_an_unchanged_schedule_changes_nothing():
    sync_schedule(SEED)
    before = PeriodicTask.objects.get(name="add-every-10s")
    report = sync_schedule(SEED)
    after = PeriodicTask.objects.get(name="add-every-10s")
    assert (report.created, report.updated, report.removed) == ([], [], [])
    assert after.next_run_at == before.next_run_at


@pytest.mark.django_db
def test_an_entry_removed_from_settings_is_removed_and_a_pause_in_the_admin_is_kept():
    sync_schedule({**SEED, "gone": {"task": ADD, "schedule": 60, "args": (1, 1)}})
    PeriodicTask.objects.filter(name="add-every-10s").update(enabled=False)
    report = sync_schedule(SEED)
    assert report.removed == ["gone"]
    assert list(PeriodicTask.objects.values_list("name", "enabled")) == [
        ("add-every-10s", False)]


@pytest.mark.django_db
def test_a_cron_line_and_a_datetime_are_schedules_too():
    at = DUE + timedelta(days=1)
    sync_schedule({"cron": {"task": ADD, "schedule": "*/5 * * * *", "args": (1, 1)},
                   "once": {"task": ADD, "schedule": at, "args": (1, 1)}})
    assert PeriodicTask.objects.get(name="cron").crontab.minute == "*/5"
    assert PeriodicTask.objects.get(name="once").next_run_at == at


@pytest.mark.parametrize("setting, check_id", [
    (["not", "a", "dict"], "jobs_beat.E001"),
    ({"x": {"schedule": 10}}, "jobs_beat.E002"),
    ({"x": {"task": ADD, "schedule": "every day"}}, "jobs_beat.E003"),
    ({"x": {"task": ADD, "schedule": timedelta(milliseconds=500)}}, "jobs_beat.E003"),
    ({"x": {"task": ADD, "schedule": 10, "args": 5}}, "jobs_beat.E004"),
    ({"x": {"task": ADD, "schedule": 10, "args": (object(),)}}, "jobs_beat.E004"),
    ({"x": {"task": ADD, "schedule": 10, "relative": True}}, "jobs_beat.E005"),
    ({"x": {"task": ADD, "schedule": 10, "options": {"priority": 300}}}, "jobs_beat.E006"),
    ({"x": {"task": ADD, "schedule": 10, "missed_runs": "all"}}, "jobs_beat.E007"),
    ({"x": {"task": "no.such.job", "schedule": 10}}, "jobs_beat.W001"),
])
def test_a_bad_settings_schedule_is_explained_by_manage_py_check(settings, setting, check_id):
    settings.JOBS_BEAT_SCHEDULE = setting
    found = [m for m in run_checks() if m.id.startswith("jobs_beat.")]
    assert [m.id for m in found] == [check_id]


def test_a_good_settings_schedule_passes_the_checks(settings):
    settings.JOBS_BEAT_SCHEDULE = {**SEED, "weekly": {"task": ADD, "args": (1, 2),
                                                      "schedule": crontab(hour=7, minute=30)}}
    assert [m.id for m in run_checks() if m.id.startswith("jobs_beat.")] == []
