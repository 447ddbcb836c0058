"""Periodic tasks in the admin: lists in words, forms that explain bad input, actions, and
edits that a running scheduler picks up without a restart."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from jobs.models import States
from jobs_beat.models import CrontabSchedule, PeriodicTask
from jobs_beat.scheduler import TASK_HEADER
from tests import factories
from tests.conftest import ROOT, wait_for
from tests.factories import every
from tests.test_beat_scheduler import ADD, fresh, periodic, sent_due_times

CHANGELIST = "admin:jobs_beat_periodictask_changelist"
ADD_URL = "admin:jobs_beat_periodictask_add"


def change_url(task) -> str:
    return reverse("admin:jobs_beat_periodictask_change", args=[task.pk])


def form_data(**values) -> dict:
    """What the periodic task form posts, with ``values`` changed."""
    data = {
        "name": "report", "task": ADD, "enabled": "on", "description": "",
        "interval": "", "crontab": "", "clocked": "",
        "start_time_0": "", "start_time_1": "", "end_time_0": "", "end_time_1": "",
        "missed_runs": "run_once", "args": "[2, 3]", "kwargs": "{}",
        "queue": "", "priority": "", "expire_seconds": "",
    }
    data.update({k: v for k, v in values.items() if v is not None})
    return {k: v for k, v in data.items() if not (k in ("enabled", "one_off") and v is False)}


def errors_of(response) -> dict:
    form = response.context["adminform"].form
    return {field: [str(e) for e in errs] for field, errs in form.errors.items()}


# The list ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_list_shows_each_schedule_in_words_with_its_runs(admin_client):
    weekly = CrontabSchedule.objects.create(minute="30", hour="7", day_of_week="1",
                                            timezone="Europe/Berlin")
    periodic("weekly report", crontab=weekly, due=datetime(2030, 1, 7, 6, 30, tzinfo=UTC))
    periodic("heartbeat", interval=every(10))
    PeriodicTask.objects.filter(name="heartbeat").update(total_run_count=42)

    page = admin_client.get(reverse(CHANGELIST)).content.decode()

    assert "At 07:30, only on Monday (Europe/Berlin)" in page
    assert "every 10 seconds" in page
    assert "2030-01-07 06:30:00" in page
    assert ">42<" in page


@pytest.mark.django_db
def test_without_cron_descriptor_the_list_shows_the_cron_line(admin_client, monkeypatch):
    monkeypatch.setitem(sys.modules, "cron_descriptor", None)
    periodic("weekly report", crontab=CrontabSchedule.objects.create(
        minute="30", hour="7", day_of_week="1", timezone="UTC"))
    assert "30 7 * * 1 (UTC)" in admin_client.get(reverse(CHANGELIST)).content.decode()


@pytest.mark.django_db
def test_the_list_filters_by_kind_of_schedule_and_searches_names(admin_client):
    periodic("nightly cleanup", crontab=CrontabSchedule.objects.create(minute="0", hour="3"))
    periodic("ping")
    by_kind = admin_client.get(reverse(CHANGELIST), {"schedule": "crontab"})
    by_name = admin_client.get(reverse(CHANGELIST), {"q": "ping"})
    assert [t.name for t in by_kind.context["cl"].result_list] == ["nightly cleanup"]
    assert [t.name for t in by_name.context["cl"].result_list] == ["ping"]


@pytest.mark.django_db
def test_the_last_result_links_to_the_job_result_with_its_state(admin_client):
    task = periodic()
    PeriodicTask.objects.filter(pk=task.pk).update(last_job_id="job-123")
    factories.record(job_id="job-123", name=ADD, state=States.SUCCESS)
    page = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert f'{reverse("admin:jobs_jobrecord_changelist")}?q=job-123' in page
    assert "SUCCESS" in page


# The form ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_change_page_shows_the_schedule_in_words_and_the_runs(admin_client):
    task = periodic("heartbeat", interval=every(10))
    PeriodicTask.objects.filter(pk=task.pk).update(total_run_count=7, last_job_id="job-7")
    page = admin_client.get(change_url(task)).content.decode()
    assert "every 10 seconds" in page
    assert "2030-01-07 09:00:00" in page  # the next run
    assert "?q=job-7" in page


@pytest.mark.django_db
def test_a_task_added_in_the_admin_is_planned_at_once(admin_client):
    response = admin_client.post(reverse(ADD_URL), form_data(interval=every(30).pk))
    assert response.status_code == 302, errors_of(response)
    task = PeriodicTask.objects.get(name="report")
    assert (task.task, task.args, task.enabled) == (ADD, [2, 3], True)
    assert task.next_run_at is not None


@pytest.mark.django_db
def test_the_job_is_chosen_from_the_registered_jobs(admin_client):
    page = admin_client.get(reverse(ADD_URL)).content.decode()
    assert f'<option value="{ADD}">' in page
    response = admin_client.post(reverse(ADD_URL), form_data(task="no.such.job",
                                                             interval=every(30).pk))
    assert "no.such.job" in errors_of(response)["task"][0]


@pytest.mark.parametrize("args, message", [
    ("[2, 3", "Enter a valid JSON."),
    ('{"x": 2}', "Enter a JSON list such as [16, 16], not an object."),
    ("[1, 2, 3]", ("The arguments don't fit the job: project.demo.jobs.add(): too many "
                   "positional arguments.")),
])
@pytest.mark.django_db
def test_arguments_are_checked_as_json_and_against_the_job(admin_client, args, message):
    response = admin_client.post(reverse(ADD_URL), form_data(args=args, interval=every(30).pk))
    assert errors_of(response)["args"] == [message]
    assert not PeriodicTask.objects.exists()


@pytest.mark.django_db
def test_keyword_arguments_must_be_a_json_object(admin_client):
    response = admin_client.post(reverse(ADD_URL), form_data(kwargs="[1]",
                                                             interval=every(30).pk))
    assert errors_of(response)["kwargs"] == [
        'Enter a JSON object such as {"user_id": 42}, not that.']


@pytest.mark.django_db
def test_a_task_needs_exactly_one_schedule(admin_client):
    none = admin_client.post(reverse(ADD_URL), form_data())
    crontab = CrontabSchedule.objects.create(minute="0")
    two = admin_client.post(reverse(ADD_URL), form_data(interval=every(30).pk,
                                                        crontab=crontab.pk))
    assert errors_of(none)["interval"] == [
        "Choose exactly one schedule: an interval, a crontab or a clocked time."]
    assert errors_of(two)["interval"] == [(
        "Choose exactly one schedule: an interval, a crontab or a clocked time "
        "(this task has interval and crontab).")]


@pytest.mark.django_db
def test_a_bad_cron_field_is_an_error_on_that_field(admin_client):
    response = admin_client.post(reverse("admin:jobs_beat_crontabschedule_add"), {
        "minute": "0", "hour": "25", "day_of_week": "*", "day_of_month": "*",
        "month_of_year": "*", "timezone": "Europe/Berlin"})
    assert errors_of(response) == {"hour": [(
        "'25' is not a valid hour: use 0-23, *, */n, a-b, a-b/n or a comma-separated list "
        "of these")]}
    assert not CrontabSchedule.objects.exists()


@pytest.mark.django_db
def test_the_time_zone_of_a_crontab_is_chosen_from_the_known_zones(admin_client):
    add = reverse("admin:jobs_beat_crontabschedule_add")
    assert '<option value="Europe/Berlin">' in admin_client.get(add).content.decode()
    fields = {"minute": "0", "hour": "7", "day_of_week": "monday", "day_of_month": "*",
              "month_of_year": "*"}
    bad = admin_client.post(add, {**fields, "timezone": "Mars/Olympus"})
    assert list(errors_of(bad)) == ["timezone"]
    good = admin_client.post(add, {**fields, "timezone": "Europe/Berlin"})
    assert good.status_code == 302
    assert str(CrontabSchedule.objects.get()) == "0 7 * * mon (Europe/Berlin)"


# Actions --------------------------------------------------------------------------------------


def act(client, action: str, *tasks):
    return client.post(reverse(CHANGELIST), {
        "action": action, "_selected_action": [t.pk for t in tasks]}, follow=True)


@pytest.mark.django_db
def test_disable_and_enable_actions(admin_client):
    task = periodic()
    act(admin_client, "disable", task)
    assert (fresh(task).enabled, fresh(task).next_run_at) == (False, None)
    act(admin_client, "enable", task)
    assert fresh(task).enabled is True
    assert fresh(task).next_run_at is not None


@pytest.mark.django_db
def test_run_now_sends_the_job_and_records_a_run_without_moving_the_schedule(
        admin_client, jobs_captured):
    task = periodic()
    response = act(admin_client, "run_now", task)
    [message] = jobs_captured.messages
    assert (message.name, message.args, message.headers[TASK_HEADER]) == (ADD, (2, 3),
                                                                          task.name)
    after = fresh(task)
    assert (after.total_run_count, after.last_job_id) == (1, message.id)
    assert after.next_run_at == task.next_run_at
    assert f"Sent 1 job(s): {task.name} ({message.id})." in response.content.decode()


@pytest.mark.django_db
def test_duplicate_makes_a_disabled_copy_with_a_new_name(admin_client):
    task = periodic("nightly", kwargs={"x": 1})
    act(admin_client, "duplicate", task)
    act(admin_client, "duplicate", task)
    copies = PeriodicTask.objects.exclude(pk=task.pk).order_by("pk")
    assert [c.name for c in copies] == ["nightly (copy)", "nightly (copy 2)"]
    assert all(c.enabled is False and c.kwargs == {"x": 1} and c.total_run_count == 0
               for c in copies)


@pytest.mark.django_db
def test_staff_who_may_only_view_get_no_actions(client, django_user_model):
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_periodictask"))
    client.force_login(user)
    task = periodic()
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    assert "run_now" not in response.content.decode()
    act(client, "run_now", task)
    assert fresh(task).total_run_count == 0


# A running scheduler picks edits up ------------------------------------------------------------


def runs_of(task) -> int:
    return len(sent_due_times(task.name))


@pytest.mark.pg
def test_a_schedule_changed_in_the_admin_is_picked_up_without_a_restart(
        start_beat, admin_client):
    task = periodic("report", interval=every(3600), due=None)
    start_beat("--no-sync")
    response = admin_client.post(change_url(task), form_data(interval=every(1).pk))
    assert response.status_code == 302, errors_of(response)
    wait_for(lambda: runs_of(task) >= 2, timeout=10,
             message="the scheduler did not pick up the new schedule")


@pytest.mark.pg
def test_a_schedule_changed_with_queryset_update_is_picked_up_without_a_restart(start_beat):
    task = periodic("report", interval=every(3600), due=None)
    start_beat("--no-sync")
    PeriodicTask.objects.filter(pk=task.pk).update(interval=every(1))
    wait_for(lambda: runs_of(task) >= 2, timeout=15,
             message="the scheduler did not pick up the new schedule")


@pytest.mark.pg
def test_a_task_disabled_with_queryset_update_stops_at_once(start_beat):
    task = periodic("report", interval=every(1), due=None)
    start_beat("--no-sync")
    wait_for(lambda: runs_of(task) >= 1, timeout=10, message="the task never ran")
    PeriodicTask.objects.filter(pk=task.pk).update(enabled=False)
    runs = runs_of(task)
    time.sleep(2.5)
    assert runs_of(task) == runs


# Independence from the jobs admin --------------------------------------------------------

#: Run in a fresh interpreter: Django set up without admin autodiscovery, then only
#: jobs_beat's admin imported. Prints the jobs.admin modules loaded and whether the jobs
#: ModelAdmins got registered.
IMPORT_BEAT_ADMIN_ALONE = """
import json, sys
import django
from django.conf import settings
settings.configure(INSTALLED_APPS=[
    "django.contrib.admin.apps.SimpleAdminConfig", "django.contrib.auth",
    "django.contrib.contenttypes", "django.contrib.messages", "django.contrib.sessions",
    "jobs", "jobs_beat",
])
django.setup()
import jobs_beat.admin
from django.contrib import admin
from jobs.models import JobRecord
from jobs_beat.models import PeriodicTask
print(json.dumps({
    "modules": sorted(m for m in sys.modules if m == "jobs.admin" or m.startswith("jobs.admin.")),
    "beat_registered": admin.site.is_registered(PeriodicTask),
    "jobs_registered": admin.site.is_registered(JobRecord),
}))
"""


def test_importing_the_beat_admin_does_not_import_the_jobs_admin():
    # Importing jobs.admin registers the jobs ModelAdmins on the default site as a side
    # effect, so jobs_beat takes its display helpers from jobs.display instead.
    process = subprocess.run([sys.executable, "-c", IMPORT_BEAT_ADMIN_ALONE], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert process.returncode == 0, process.stderr
    loaded = json.loads(process.stdout)
    assert loaded["modules"] == []
    assert (loaded["beat_registered"], loaded["jobs_registered"]) == (True, False)
