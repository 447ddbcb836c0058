"""The admin of the jobs app: results, dead letters, workers and queued messages."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from jobs.display import format_runtime
from jobs.models import DeadLetter, JobRecord, Message, States, Worker
from tests import factories

pytestmark = pytest.mark.django_db

SECRET_ARG = "card-4242-4242"
SECRET_KWARG = "hunter2-token"
TRACEBACK = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: <boom> & co'


@pytest.fixture
def failed_job():
    return factories.record(
        job_id="0f9c2a1e-failed", name="shop.jobs.charge", state=States.FAILURE,
        args=[SECRET_ARG, 12], kwargs={"token": SECRET_KWARG},
        result={"exc_type": "ValueError", "exc_module": "builtins", "exc_message": ["boom"]},
        traceback=TRACEBACK, queue="payments", worker="jobs@host-a", retries=2, runtime=1.5,
    )


def changelist(model: str) -> str:
    return reverse(f"admin:jobs_{model}_changelist")


def change(obj) -> str:
    return reverse(f"admin:jobs_{obj._meta.model_name}_change", args=[obj.pk])


def pre_blocks(response) -> list[str]:
    """The texts of the page's ``<pre>`` blocks, unescaped."""
    found = re.findall(r"<pre[^>]*>(.*?)</pre>", response.content.decode(), flags=re.DOTALL)
    return [html.unescape(text) for text in found]


def json_blocks(response) -> list:
    """The values of the page's ``<pre>`` blocks that hold JSON."""
    values = []
    for text in pre_blocks(response):
        try:
            values.append(json.loads(text))
        except ValueError:
            pass
    return values


# Job results: the list ------------------------------------------------------------------------


def test_result_list_shows_jobs_with_a_state_badge(admin_client, failed_job):
    response = admin_client.get(changelist("jobrecord"))

    assert response.status_code == 200
    assert failed_job.job_id in response.text
    assert '<span class="jobs-badge jobs-badge-error">FAILURE</span>' in response.text
    assert "1.50 s" in response.text


def test_result_list_offers_filters_by_state_name_queue_worker_and_dates(admin_client, failed_job):
    factories.worker_row(hostname="jobs@host-a", queues=["payments"])

    response = admin_client.get(changelist("jobrecord"))

    titles = re.findall(r'data-filter-title="([^"]+)"', response.text)
    assert titles == ["state", "job name", "queue", "worker", "date done", "date created"]


def filter_choices(response, title: str) -> list[str]:
    [spec] = [spec for spec in response.context["cl"].filter_specs if spec.title == title]
    return [choice["display"] for choice in spec.choices(response.context["cl"])][1:]


def test_result_list_filter_choices_come_from_the_project_not_the_table(admin_client,
                                                                         failed_job, settings):
    settings.JOBS = {**settings.JOBS, "TASK_ROUTES": {"shop.*": "shop"}}
    factories.worker_row(hostname="jobs@host-b", queues=["mail"])

    response = admin_client.get(changelist("jobrecord"))

    assert "project.demo.jobs.add" in filter_choices(response, "job name")
    assert "shop.jobs.charge" not in filter_choices(response, "job name")
    assert filter_choices(response, "queue") == ["default", "mail", "shop"]
    assert filter_choices(response, "worker") == ["jobs@host-b"]
    assert "FAILURE" in filter_choices(response, "state")


def test_result_list_filters_by_a_value_that_is_not_among_the_choices(admin_client, failed_job):
    response = admin_client.get(changelist("jobrecord"), {"name": "shop.jobs.charge"})

    assert [r.job_id for r in response.context["cl"].result_list] == [failed_job.job_id]
    assert "shop.jobs.charge" in filter_choices(response, "job name")


def test_result_list_reads_no_distinct_values_of_the_results_table(admin_client, failed_job):
    with CaptureQueriesContext(connection) as queries:
        admin_client.get(changelist("jobrecord"))

    assert not [q["sql"] for q in queries if "DISTINCT" in q["sql"] and "jobs_jobresult" in q["sql"]]


def test_result_list_finds_a_whole_job_id_alone(admin_client, failed_job):
    factories.record(job_id=f"{failed_job.job_id}-and-more", name="shop.jobs.refund")

    response = admin_client.get(changelist("jobrecord"), {"q": failed_job.job_id})

    assert [r.job_id for r in response.context["cl"].result_list] == [failed_job.job_id]


def test_result_list_filters_by_state(admin_client, failed_job):
    factories.record(job_id="ok-1", state=States.SUCCESS)

    response = admin_client.get(changelist("jobrecord"), {"state": "SUCCESS"})

    assert "ok-1" in response.text
    assert failed_job.job_id not in response.text


def test_result_list_searches_job_ids(admin_client, failed_job):
    factories.record(job_id="other-job", name="shop.jobs.refund")

    response = admin_client.get(changelist("jobrecord"), {"q": "0f9c2a1e"})

    assert failed_job.job_id in response.text
    assert "other-job" not in response.text


def test_result_list_searches_arguments(admin_client, failed_job):
    factories.record(job_id="other-job", args=["card-1111"])

    response = admin_client.get(changelist("jobrecord"), {"q": "4242-4242"})

    assert [r.job_id for r in response.context["cl"].result_list] == [failed_job.job_id]


def test_result_list_filters_by_a_range_of_times_in_the_current_time_zone(admin_client,
                                                                          settings):
    settings.TIME_ZONE = "Europe/Paris"
    for job_id, hour in (("too-early", 9), ("inside", 11), ("too-late", 13)):
        factories.record(job_id=job_id, date_done=datetime(2025, 1, 2, hour, 0, tzinfo=UTC))

    response = admin_client.get(changelist("jobrecord"), {
        "date_done__gte": "2025-01-02T11:00", "date_done__lt": "2025-01-02T13:00"})

    assert [r.job_id for r in response.context["cl"].result_list] == ["inside"]
    assert 'name="date_done__gte" value="2025-01-02T11:00"' in response.text


def test_result_list_date_range_form_keeps_the_other_filters(admin_client, failed_job):
    response = admin_client.get(changelist("jobrecord"), {"state": "FAILURE"})

    form = re.search(r'<form method="get" class="jobs-range">(.*?)</form>', response.text,
                     flags=re.DOTALL).group(1)
    assert '<input type="hidden" name="state" value="FAILURE">' in form


def test_result_list_puts_the_newest_first(admin_client):
    now = timezone.now()
    factories.record(job_id="older-job", date_created=now - timedelta(hours=1))
    factories.record(job_id="newer-job", date_created=now)

    text = admin_client.get(changelist("jobrecord")).text

    assert text.index("newer-job") < text.index("older-job")


def test_result_list_shows_times_at_a_glance_and_to_the_second_on_hover(admin_client, settings):
    settings.TIME_ZONE = "Europe/Paris"
    factories.record(job_id="timed-job", date_created=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    factories.record(job_id="today-job", date_created=timezone.now())

    response = admin_client.get(changelist("jobrecord"))

    assert ('<td class="field-created_label"><span title="2025-01-02 04:04:05">2025-01-02'
            '</span></td>') in response.text
    today = timezone.localtime(JobRecord.objects.get(job_id="today-job").date_created)
    assert (f'<td class="field-created_label"><span title="{today:%Y-%m-%d %H:%M:%S}">'
            f'{today:%H:%M:%S}</span></td>') in response.text


def test_result_list_shows_a_short_id_with_the_whole_one_to_hover_and_copy(admin_client):
    row = factories.record(job_id="0b8e5a6c-5d4f-4f3e-9a1b-2c3d4e5f6a7b", retries=2)

    response = admin_client.get(changelist("jobrecord"))

    assert (f'<a class="jobs-id" href="{reverse("admin:jobs_jobrecord_change", args=[row.pk])}" '
            f'title="{row.job_id}">{row.job_id}</a>') in response.text
    assert f'data-copy="{row.job_id}"' in response.text
    assert 'title="retried 2 times">↻2</span>' in response.text


def test_result_list_pages_by_fifty_without_counting_the_whole_table(admin_client):
    JobRecord.objects.bulk_create(JobRecord(job_id=f"job-{i:03}") for i in range(51))

    response = admin_client.get(changelist("jobrecord"))

    assert len(response.context["cl"].result_list) == 50
    assert response.context["cl"].show_full_result_count is False


# Job results: the detail ---------------------------------------------------------------------


def test_result_detail_shows_arguments_and_result_as_json_in_pre(admin_client, failed_job):
    values = json_blocks(admin_client.get(change(failed_job)))

    assert [SECRET_ARG, 12] in values
    assert {"token": SECRET_KWARG} in values
    assert failed_job.result in values


def test_result_detail_pretty_prints_json(admin_client, failed_job):
    blocks = pre_blocks(admin_client.get(change(failed_job)))

    assert f'[\n  "{SECRET_ARG}",\n  12\n]' in blocks


def test_result_detail_shows_the_traceback_in_pre(admin_client, failed_job):
    assert TRACEBACK in pre_blocks(admin_client.get(change(failed_job)))


def test_result_detail_is_read_only(admin_client, failed_job):
    response = admin_client.get(change(failed_job))

    assert response.status_code == 200
    assert 'name="_save"' not in response.text
    assert 'name="state"' not in response.text
    assert admin_client.post(change(failed_job), {"state": "SUCCESS"}).status_code == 403
    failed_job.refresh_from_db()
    assert failed_job.state == States.FAILURE


def test_results_cannot_be_added_by_hand(admin_client):
    assert admin_client.get(reverse("admin:jobs_jobrecord_add")).status_code == 403


def test_result_detail_links_to_its_parent_job(admin_client):
    parent = factories.record(job_id="parent-job", root_id="parent-job")
    child = factories.record(job_id="child-job", parent_id="parent-job", root_id="parent-job")

    response = admin_client.get(change(child))

    assert f'<a href="{change(parent)}">parent-job</a>' in response.text


def test_result_detail_lists_the_jobs_it_started(admin_client):
    parent = factories.record(job_id="parent-job")
    child = factories.record(job_id="child-job", parent_id="parent-job", state=States.SUCCESS)
    factories.record(job_id="stranger-job")

    text = admin_client.get(change(parent)).text

    assert f'<a href="{change(child)}">child-job</a>' in text
    assert "stranger-job" not in text


def test_result_detail_links_to_the_list_of_its_jobs_when_they_are_many(admin_client):
    parent = factories.record(job_id="parent-job")
    JobRecord.objects.bulk_create(JobRecord(job_id=f"child-{i:02}", parent_id="parent-job")
                                  for i in range(11))
    factories.record(job_id="stranger-job")

    link = re.search(r'<a href="([^"]+)">list them</a>', admin_client.get(change(parent)).text)
    response = admin_client.get(html.unescape(link.group(1)))

    assert sorted(r.job_id for r in response.context["cl"].result_list) == [
        f"child-{i:02}" for i in range(11)]


def test_result_detail_names_a_parent_without_a_row(admin_client):
    child = factories.record(job_id="child-job", parent_id="gone-job")

    assert "gone-job (no result recorded)" in admin_client.get(change(child)).text


def test_superuser_can_delete_a_result(admin_client, failed_job):
    response = admin_client.post(reverse("admin:jobs_jobrecord_delete", args=[failed_job.pk]),
                                 {"post": "yes"})

    assert response.status_code == 302
    assert not JobRecord.objects.filter(pk=failed_job.pk).exists()


# Job results: permissions --------------------------------------------------------------------


def test_staff_without_view_permission_gets_403_and_no_arguments(staff_client, failed_job):
    client = staff_client()

    for url in (changelist("jobrecord"), change(failed_job)):
        response = client.get(url)
        assert response.status_code == 403
        assert SECRET_ARG not in response.text
        assert SECRET_KWARG not in response.text


def test_staff_with_other_jobs_permissions_still_cannot_see_results(staff_client, failed_job):
    client = staff_client("view_deadletter", "view_worker", "view_message")

    assert client.get(changelist("jobrecord")).status_code == 403
    assert client.get(change(failed_job)).status_code == 403


def test_view_permission_shows_results_and_their_arguments(staff_client, failed_job):
    client = staff_client("view_jobrecord")

    assert client.get(changelist("jobrecord")).status_code == 200
    response = client.get(change(failed_job))
    assert response.status_code == 200
    assert [SECRET_ARG, 12] in json_blocks(response)


def test_view_permission_alone_cannot_delete(staff_client, failed_job):
    client = staff_client("view_jobrecord")

    delete_url = reverse("admin:jobs_jobrecord_delete", args=[failed_job.pk])
    assert client.get(delete_url).status_code == 403
    assert client.post(delete_url, {"post": "yes"}).status_code == 403
    client.post(changelist("jobrecord"), {"action": "delete_selected",
                                          "_selected_action": [failed_job.pk], "post": "yes"})
    assert JobRecord.objects.filter(pk=failed_job.pk).exists()


def test_delete_permission_allows_deleting(staff_client, failed_job):
    client = staff_client("view_jobrecord", "delete_jobrecord")

    client.post(changelist("jobrecord"), {"action": "delete_selected",
                                          "_selected_action": [failed_job.pk], "post": "yes"})

    assert not JobRecord.objects.filter(pk=failed_job.pk).exists()


# Job results: retry and revoke ---------------------------------------------------------------


@pytest.fixture
def failed_add():
    """A failed run of a job this project has: ``project.demo.jobs.add(2, 3)``."""
    return factories.record(job_id="failed-add", name=factories.ADD, state=States.FAILURE,
                            args=[2, 3], kwargs={}, queue="other", root_id="failed-add")


def retry_url(row) -> str:
    return reverse("admin:jobs_jobrecord_retry", args=[row.pk])


def revoke_url(row) -> str:
    return reverse("admin:jobs_jobrecord_revoke", args=[row.pk])


def page_messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_retry_enqueues_the_job_again_with_the_same_arguments_and_queue(
        admin_client, failed_add, jobs_captured):
    response = admin_client.post(retry_url(failed_add))

    assert response.status_code == 302
    assert response["Location"] == change(failed_add)
    [sent] = jobs_captured.messages
    assert (sent.name, sent.args, sent.kwargs, sent.queue) == (
        "project.demo.jobs.add", (2, 3), {}, "other")
    assert sent.id != failed_add.job_id
    assert sent.parent_id == failed_add.job_id


def test_retry_links_to_the_new_job(admin_client, failed_add, jobs_captured):
    response = admin_client.post(retry_url(failed_add), follow=True)

    [sent] = jobs_captured.messages
    link = reverse("admin:jobs_jobrecord_job", args=[sent.id])
    assert page_messages(response) == [
        f'Retried: failed-add as <a href="{link}">{sent.id}</a>']


def test_retry_of_a_job_this_project_does_not_have_sends_nothing(admin_client, failed_job,
                                                                 jobs_captured):
    response = admin_client.post(retry_url(failed_job), follow=True)

    assert jobs_captured.messages == []
    assert page_messages(response) == [
        f"Could not retry {failed_job}: no job named 'shop.jobs.charge' is registered in "
        "this project"]


def test_retry_of_a_job_whose_arguments_no_longer_fit_sends_nothing(admin_client, failed_add,
                                                                    jobs_captured):
    JobRecord.objects.filter(pk=failed_add.pk).update(args=[2])

    response = admin_client.post(retry_url(failed_add), follow=True)

    assert jobs_captured.messages == []
    [text] = page_messages(response)
    assert "missing a required argument: 'y'" in text


def test_retry_refuses_a_job_that_has_not_finished(admin_client, failed_add, jobs_captured):
    JobRecord.objects.filter(pk=failed_add.pk).update(state=States.STARTED)

    response = admin_client.post(retry_url(failed_add), follow=True)

    assert jobs_captured.messages == []
    assert "it is STARTED, not finished; revoke it first" in page_messages(response)[0]


def test_retry_action_retries_each_selected_job(admin_client, failed_add, jobs_captured):
    other = factories.record(job_id="failed-add-2", name=factories.ADD, state=States.FAILURE,
                             args=[5, 6])

    admin_client.post(changelist("jobrecord"), {
        "action": "retry", "_selected_action": [failed_add.pk, other.pk]})

    assert sorted(m.args for m in jobs_captured.messages) == [(2, 3), (5, 6)]


def test_the_new_job_lists_the_one_it_retried_as_its_parent(admin_client, failed_add,
                                                             jobs_captured):
    admin_client.post(retry_url(failed_add))
    [sent] = jobs_captured.messages
    factories.record(job_id=sent.id, name=sent.name, parent_id=sent.parent_id,
                     state=States.SUCCESS)

    text = admin_client.get(change(failed_add)).text

    new = JobRecord.objects.get(job_id=sent.id)
    assert f'<a href="{change(new)}">{sent.id}</a>' in text


def test_revoke_keeps_a_job_waiting_for_a_retry_from_running(admin_client, failed_add):
    JobRecord.objects.filter(pk=failed_add.pk).update(state=States.RETRY)

    admin_client.post(revoke_url(failed_add))

    failed_add.refresh_from_db()
    assert failed_add.state == States.REVOKED


def test_revoke_of_a_running_job_asks_its_worker_to_terminate_it(admin_client, failed_add):
    JobRecord.objects.filter(pk=failed_add.pk).update(state=States.STARTED)

    admin_client.post(revoke_url(failed_add))

    failed_add.refresh_from_db()
    assert failed_add.state == States.REVOKED
    assert failed_add.result["exc_message"] == ["terminated"]


def test_revoke_refuses_a_finished_job(admin_client, failed_add):
    response = admin_client.post(revoke_url(failed_add), follow=True)

    failed_add.refresh_from_db()
    assert failed_add.state == States.FAILURE
    assert page_messages(response) == [f"Could not revoke {failed_add}: it has finished "
                                       "(FAILURE)"]


def test_job_page_offers_retry_for_a_finished_job(admin_client, failed_add):
    text = admin_client.get(change(failed_add)).text

    assert f'action="{retry_url(failed_add)}"' in text
    assert f'action="{revoke_url(failed_add)}"' not in text


def test_job_page_offers_revoke_for_a_job_not_finished(admin_client, failed_add):
    JobRecord.objects.filter(pk=failed_add.pk).update(state=States.STARTED)

    text = admin_client.get(change(failed_add)).text

    assert f'action="{revoke_url(failed_add)}"' in text
    assert f'action="{retry_url(failed_add)}"' not in text


def test_job_page_offers_no_actions_to_users_who_may_only_view(staff_client, failed_add):
    text = staff_client("view_jobrecord").get(change(failed_add)).text

    assert retry_url(failed_add) not in text
    assert revoke_url(failed_add) not in text


def test_retry_and_revoke_need_the_change_permission(staff_client, failed_add, jobs_captured):
    client = staff_client("view_jobrecord")

    assert client.post(retry_url(failed_add)).status_code == 403
    client.post(changelist("jobrecord"), {"action": "retry",
                                          "_selected_action": [failed_add.pk]})
    JobRecord.objects.filter(pk=failed_add.pk).update(state=States.STARTED)
    assert client.post(revoke_url(failed_add)).status_code == 403

    assert jobs_captured.messages == []
    failed_add.refresh_from_db()
    assert failed_add.state == States.STARTED


def test_the_change_permission_allows_retrying(staff_client, failed_add, jobs_captured):
    client = staff_client("view_jobrecord", "change_jobrecord")

    client.post(retry_url(failed_add))

    assert len(jobs_captured.messages) == 1


def test_actions_are_refused_without_a_csrf_token(admin_user, failed_add, jobs_captured):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)

    assert client.post(retry_url(failed_add)).status_code == 403
    client.post(changelist("jobrecord"), {"action": "retry",
                                          "_selected_action": [failed_add.pk]})

    assert jobs_captured.messages == []


def test_actions_are_not_taken_on_a_get(admin_client, failed_add, jobs_captured):
    assert admin_client.get(retry_url(failed_add)).status_code == 405
    assert jobs_captured.messages == []


def test_a_job_id_leads_to_its_page_once_recorded(admin_client, failed_add):
    response = admin_client.get(reverse("admin:jobs_jobrecord_job", args=["failed-add"]))

    assert response["Location"] == change(failed_add)


def test_a_job_id_not_recorded_yet_leads_to_the_list_saying_so(admin_client):
    response = admin_client.get(reverse("admin:jobs_jobrecord_job", args=["not-yet"]),
                                follow=True)

    assert page_messages(response) == ["Job not-yet has no result yet: it waits for a worker."]


# Dead letters --------------------------------------------------------------------------------


@pytest.fixture
def dead_letter():
    return factories.dead_letter(
        job_id="dead-1", job_name="shop.jobs.gone",
        reason="NotRegistered: no job named 'shop.jobs.gone' " + "x" * 200,
        properties={"correlation_id": "dead-1"}, body=b'[[1, 2], {}, {}] caf\xc3\xa9 \xff',
        worker="jobs@host-a",
    )


def test_dead_letter_list_shows_a_truncated_reason(admin_client, dead_letter):
    response = admin_client.get(changelist("deadletter"))

    assert response.status_code == 200
    assert "dead-1" in response.text
    assert "NotRegistered: no job named" in response.text
    assert "x" * 200 not in response.text


def test_dead_letter_detail_shows_reason_headers_and_body(admin_client, dead_letter):
    response = admin_client.get(change(dead_letter))

    blocks, values = pre_blocks(response), json_blocks(response)
    assert dead_letter.reason in blocks
    assert dead_letter.headers in values
    assert dead_letter.properties in values
    assert "[[1, 2], {}, {}] café \ufffd" in blocks


def test_dead_letter_detail_cuts_a_large_body(admin_client, dead_letter):
    dead_letter.body = b"a" * 50_000
    dead_letter.save()

    blocks = pre_blocks(admin_client.get(change(dead_letter)))

    assert "a" * 10240 + "\n… (50,000 bytes in all; the first 10,240 are shown)" in blocks


def test_dead_letters_can_be_deleted(admin_client, dead_letter):
    admin_client.post(reverse("admin:jobs_deadletter_delete", args=[dead_letter.pk]),
                      {"post": "yes"})

    assert not DeadLetter.objects.exists()


# Workers -------------------------------------------------------------------------------------


@pytest.fixture
def workers():
    now = timezone.now()
    online = factories.worker_row(hostname="jobs@alive", pid=101, queues=["default", "mail"],
                                  pool="prefork", concurrency=4, processed=12)
    stopped = factories.worker_row(hostname="jobs@gone", pid=202, pool="threads",
                                   concurrency=8, stopped_at=now)
    return online, stopped


def test_worker_list_shows_who_is_online(admin_client, workers):
    response = admin_client.get(changelist("worker"))

    assert response.status_code == 200
    assert "default, mail" in response.text
    assert response.text.count("icon-yes.svg") == 1
    assert response.text.count("icon-no.svg") == 1


def test_worker_list_filters_online_workers(admin_client, workers):
    response = admin_client.get(changelist("worker"), {"online": "yes"})

    assert [w.hostname for w in response.context["cl"].result_list] == ["jobs@alive"]


def test_worker_list_filters_offline_workers(admin_client, workers):
    response = admin_client.get(changelist("worker"), {"online": "no"})

    assert [w.hostname for w in response.context["cl"].result_list] == ["jobs@gone"]


def test_workers_are_read_only(admin_client, workers):
    assert admin_client.get(reverse("admin:jobs_worker_add")).status_code == 403
    response = admin_client.get(change(workers[0]))
    assert response.status_code == 200
    assert 'name="_save"' not in response.text


def test_a_worker_page_shows_its_last_wait_for_the_database(admin_client, workers, settings):
    settings.TIME_ZONE = "UTC"
    online, _ = workers
    back = datetime(2030, 1, 7, 9, 20, tzinfo=UTC)
    Worker.objects.filter(pk=online.pk).update(database_lost_at=back - timedelta(seconds=31),
                                               database_back_at=back)

    response = admin_client.get(change(online))

    assert "Last wait for the database" in response.text
    assert "31.00 s, from 2030-01-07 09:19:29 to 2030-01-07 09:20:00" in response.text


def shutdown_url(worker) -> str:
    return reverse("admin:jobs_worker_shutdown", args=[worker.pk])


def test_shutdown_asks_the_worker_to_stop(admin_client, workers):
    online, _ = workers

    response = admin_client.post(shutdown_url(online))

    assert response["Location"] == change(online)
    online.refresh_from_db()
    assert online.stop_requested_at is not None


def test_shutdown_of_a_stopped_worker_says_so(admin_client, workers):
    _, stopped = workers

    response = admin_client.post(shutdown_url(stopped), follow=True)

    stopped.refresh_from_db()
    assert stopped.stop_requested_at is None
    assert page_messages(response) == [f"Could not ask {stopped} to shut down: it has "
                                       "stopped already"]


def test_shutdown_action_asks_each_selected_worker(admin_client, workers):
    online, _ = workers
    other = factories.worker_row(hostname="jobs@other", pid=303)

    admin_client.post(changelist("worker"), {"action": "shut_down",
                                             "_selected_action": [online.pk, other.pk]})

    assert Worker.objects.filter(stop_requested_at__isnull=False).count() == 2


def test_shutdown_needs_the_change_permission_on_workers(staff_client, workers):
    online, _ = workers
    client = staff_client("view_worker", "change_jobrecord")

    assert shutdown_url(online) not in client.get(change(online)).text
    assert client.post(shutdown_url(online)).status_code == 403
    online.refresh_from_db()
    assert online.stop_requested_at is None


def test_worker_page_offers_shutdown_while_the_worker_runs(admin_client, workers):
    online, stopped = workers

    assert f'action="{shutdown_url(online)}"' in admin_client.get(change(online)).text
    assert shutdown_url(stopped) not in admin_client.get(change(stopped)).text


# Queued messages -----------------------------------------------------------------------------


def message(**fields) -> Message:
    return factories.message_row(job_id="m-1", **fields)


def test_message_list_is_titled_queued_messages_with_a_due_column(admin_client):
    message()

    response = admin_client.get(changelist("message"))

    assert response.status_code == 200
    assert "Queued messages" in response.text
    assert ">Due<" in response.text


def test_message_list_tells_ready_delayed_and_leased_apart(admin_client):
    now = timezone.now()
    ready = message()
    delayed = message(visible_at=now + timedelta(hours=1))
    leased = message(lease_owner="w", lease_until=now + timedelta(seconds=30))

    response = admin_client.get(changelist("message"))

    statuses = {obj.pk: re.search(r">(ready|delayed|leased)<", str(row)).group(1)
                for obj, row in zip(response.context["cl"].result_list,
                                    response.context["results"], strict=True)}
    assert statuses == {ready.pk: "ready", delayed.pk: "delayed", leased.pk: "leased"}


def test_message_list_filters_by_status(admin_client):
    message()
    delayed = message(visible_at=timezone.now() + timedelta(hours=1))

    response = admin_client.get(changelist("message"), {"status": "delayed"})

    assert [m.pk for m in response.context["cl"].result_list] == [delayed.pk]


def test_message_detail_shows_the_job_name_and_id_but_not_the_payload(admin_client):
    row = message()

    response = admin_client.get(change(row))

    assert "shop.jobs.charge" in response.text
    assert "m-1" in response.text
    assert "W1tdLCB7fSwge31d" not in response.text


def test_message_detail_survives_a_payload_that_is_not_a_job(admin_client):
    row = factories.message_row(payload="[not json")

    assert admin_client.get(change(row)).status_code == 200


def test_messages_can_be_deleted(admin_client):
    row = message()

    admin_client.post(reverse("admin:jobs_message_delete", args=[row.pk]), {"post": "yes"})

    assert not Message.objects.exists()


def test_message_list_shows_each_jobs_recorded_state(admin_client):
    message()
    factories.record(job_id="m-1", state=States.REVOKED)

    response = admin_client.get(changelist("message"))

    assert '<span class="jobs-badge jobs-badge-muted">REVOKED</span>' in response.text


def test_run_now_makes_a_delayed_job_due(admin_client):
    delayed = message(visible_at=timezone.now() + timedelta(hours=1))

    admin_client.post(changelist("message"), {"action": "run_now",
                                              "_selected_action": [delayed.pk]})

    delayed.refresh_from_db()
    assert delayed.visible_at <= timezone.now()


def test_run_now_leaves_leased_messages_alone(admin_client):
    until = timezone.now() + timedelta(seconds=30)
    leased = message(lease_owner="w", lease_until=until,
                     visible_at=timezone.now() + timedelta(hours=1))

    response = admin_client.post(changelist("message"), {
        "action": "run_now", "_selected_action": [leased.pk]}, follow=True)

    leased.refresh_from_db()
    assert leased.visible_at > timezone.now()
    assert page_messages(response) == ["1 message(s) were not delayed: left as they were."]


def test_revoking_a_delayed_job_records_it_revoked_and_keeps_it_until_due(admin_client):
    delayed = message(visible_at=timezone.now() + timedelta(hours=1))

    admin_client.post(changelist("message"), {"action": "revoke",
                                              "_selected_action": [delayed.pk]})

    assert JobRecord.objects.get(job_id="m-1").state == States.REVOKED
    assert Message.objects.filter(pk=delayed.pk).exists()


def test_revoking_a_job_a_worker_holds_asks_the_worker_to_stop_it(admin_client):
    held = message(lease_owner="w", lease_until=timezone.now() + timedelta(seconds=30))
    factories.record(job_id="m-1", state=States.STARTED)

    admin_client.post(changelist("message"), {"action": "revoke",
                                              "_selected_action": [held.pk]})

    result = JobRecord.objects.get(job_id="m-1")
    assert (result.state, result.result["exc_message"]) == (States.REVOKED, ["terminated"])


def test_message_list_survives_a_job_id_that_is_not_a_string(admin_client):
    payload = {"headers": {"task": "x", "id": ["not", "an", "id"]}}
    factories.message_row(payload=json.dumps(payload))

    assert admin_client.get(changelist("message")).status_code == 200


def test_deleting_a_queued_job_records_it_revoked(admin_client):
    row = message()

    admin_client.post(reverse("admin:jobs_message_delete", args=[row.pk]), {"post": "yes"})

    result = JobRecord.objects.get(job_id="m-1")
    assert (result.state, result.name) == (States.REVOKED, "shop.jobs.charge")
    assert result.result["exc_message"] == ["deleted from the admin"]


def test_message_actions_need_the_change_permission(staff_client):
    delayed = message(visible_at=timezone.now() + timedelta(hours=1))
    client = staff_client("view_message", "change_jobrecord")

    for action in ("run_now", "revoke"):
        client.post(changelist("message"), {"action": action, "_selected_action": [delayed.pk]})

    delayed.refresh_from_db()
    assert delayed.visible_at > timezone.now()
    assert not JobRecord.objects.filter(job_id="m-1").exists()


# Formatting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "text"), [
    (None, None), (0.0004, "400 µs"), (0.012, "12 ms"), (3.4, "3.40 s"), (125, "2 min 5 s"),
    (3780, "1 h 3 min"),
])
def test_runtime_is_formatted_for_people(seconds, text):
    assert format_runtime(seconds) == text
