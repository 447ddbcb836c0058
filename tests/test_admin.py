"""The admin of the jobs app: results, dead letters, workers and queued messages."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from jobs.admin import format_runtime
from jobs.models import DeadLetter, JobResult, Message, States, Worker

pytestmark = pytest.mark.django_db

SECRET_ARG = "card-4242-4242"
SECRET_KWARG = "hunter2-token"
TRACEBACK = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: <boom> & co'


@pytest.fixture
def failed_job():
    return JobResult.objects.create(
        job_id="0f9c2a1e-failed", name="shop.jobs.charge", state=States.FAILURE,
        args=[SECRET_ARG, 12], kwargs={"token": SECRET_KWARG},
        result={"exc_type": "ValueError", "exc_module": "builtins", "exc_message": ["boom"]},
        traceback=TRACEBACK, queue="payments", worker="jobs@host-a", retries=2, runtime=1.5,
        date_done=timezone.now(),
    )


@pytest.fixture
def staff_client(client, django_user_model):
    """Log in a staff user holding only the given ``jobs`` permissions (codenames)."""

    def login(*codenames: str):
        user = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
        user.user_permissions.add(*Permission.objects.filter(
            content_type__app_label="jobs", codename__in=codenames))
        client.force_login(user)
        return client

    return login


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
    response = admin_client.get(changelist("jobresult"))

    assert response.status_code == 200
    assert failed_job.job_id in response.text
    assert '<span class="jobs-badge jobs-badge-error">FAILURE</span>' in response.text
    assert "1.50 s" in response.text


def test_result_list_offers_filters_by_state_name_queue_worker_and_date(admin_client, failed_job):
    response = admin_client.get(changelist("jobresult"))

    titles = re.findall(r'data-filter-title="([^"]+)"', response.text)
    assert titles == ["state", "job name", "queue", "worker", "date done"]


def test_result_list_filters_by_state(admin_client, failed_job):
    JobResult.objects.create(job_id="ok-1", name="shop.jobs.charge", state=States.SUCCESS)

    response = admin_client.get(changelist("jobresult"), {"state": "SUCCESS"})

    assert "ok-1" in response.text
    assert failed_job.job_id not in response.text


def test_result_list_searches_job_ids(admin_client, failed_job):
    JobResult.objects.create(job_id="other-job", name="shop.jobs.refund")

    response = admin_client.get(changelist("jobresult"), {"q": "0f9c2a1e"})

    assert failed_job.job_id in response.text
    assert "other-job" not in response.text


def test_result_list_puts_the_newest_first(admin_client):
    now = timezone.now()
    JobResult.objects.create(job_id="older-job", date_created=now - timedelta(hours=1))
    JobResult.objects.create(job_id="newer-job", date_created=now)

    text = admin_client.get(changelist("jobresult")).text

    assert text.index("newer-job") < text.index("older-job")


def test_result_list_shows_times_to_the_second(admin_client, settings):
    settings.TIME_ZONE = "Europe/Paris"
    JobResult.objects.create(job_id="timed-job",
                             date_created=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))

    response = admin_client.get(changelist("jobresult"))

    assert '<td class="field-created">2025-01-02 04:04:05</td>' in response.text


def test_result_list_pages_by_fifty_without_counting_the_whole_table(admin_client):
    JobResult.objects.bulk_create(JobResult(job_id=f"job-{i:03}") for i in range(51))

    response = admin_client.get(changelist("jobresult"))

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
    assert admin_client.get(reverse("admin:jobs_jobresult_add")).status_code == 403


def test_result_detail_links_to_its_parent_job(admin_client):
    parent = JobResult.objects.create(job_id="parent-job", root_id="parent-job")
    child = JobResult.objects.create(job_id="child-job", parent_id="parent-job",
                                     root_id="parent-job")

    response = admin_client.get(change(child))

    assert f'<a href="{change(parent)}">parent-job</a>' in response.text


def test_result_detail_links_to_the_jobs_it_started(admin_client):
    parent = JobResult.objects.create(job_id="parent-job")
    JobResult.objects.create(job_id="child-job", parent_id="parent-job")
    JobResult.objects.create(job_id="stranger-job")

    link = re.search(r'<a href="([^"]+)">list them</a>', admin_client.get(change(parent)).text)
    response = admin_client.get(html.unescape(link.group(1)))

    assert [r.job_id for r in response.context["cl"].result_list] == ["child-job"]


def test_result_detail_names_a_parent_without_a_row(admin_client):
    child = JobResult.objects.create(job_id="child-job", parent_id="gone-job")

    assert "gone-job (no result recorded)" in admin_client.get(change(child)).text


def test_superuser_can_delete_a_result(admin_client, failed_job):
    response = admin_client.post(reverse("admin:jobs_jobresult_delete", args=[failed_job.pk]),
                                 {"post": "yes"})

    assert response.status_code == 302
    assert not JobResult.objects.filter(pk=failed_job.pk).exists()


# Job results: permissions --------------------------------------------------------------------


def test_staff_without_view_permission_gets_403_and_no_arguments(staff_client, failed_job):
    client = staff_client()

    for url in (changelist("jobresult"), change(failed_job)):
        response = client.get(url)
        assert response.status_code == 403
        assert SECRET_ARG not in response.text
        assert SECRET_KWARG not in response.text


def test_staff_with_other_jobs_permissions_still_cannot_see_results(staff_client, failed_job):
    client = staff_client("view_deadletter", "view_worker", "view_message")

    assert client.get(changelist("jobresult")).status_code == 403
    assert client.get(change(failed_job)).status_code == 403


def test_view_permission_shows_results_and_their_arguments(staff_client, failed_job):
    client = staff_client("view_jobresult")

    assert client.get(changelist("jobresult")).status_code == 200
    response = client.get(change(failed_job))
    assert response.status_code == 200
    assert [SECRET_ARG, 12] in json_blocks(response)


def test_view_permission_alone_cannot_delete(staff_client, failed_job):
    client = staff_client("view_jobresult")

    delete_url = reverse("admin:jobs_jobresult_delete", args=[failed_job.pk])
    assert client.get(delete_url).status_code == 403
    assert client.post(delete_url, {"post": "yes"}).status_code == 403
    client.post(changelist("jobresult"), {"action": "delete_selected",
                                          "_selected_action": [failed_job.pk], "post": "yes"})
    assert JobResult.objects.filter(pk=failed_job.pk).exists()


def test_delete_permission_allows_deleting(staff_client, failed_job):
    client = staff_client("view_jobresult", "delete_jobresult")

    client.post(changelist("jobresult"), {"action": "delete_selected",
                                          "_selected_action": [failed_job.pk], "post": "yes"})

    assert not JobResult.objects.filter(pk=failed_job.pk).exists()


# Dead letters --------------------------------------------------------------------------------


@pytest.fixture
def dead_letter():
    return DeadLetter.objects.create(
        queue="default", job_id="dead-1", job_name="shop.jobs.gone",
        reason="NotRegistered: no job named 'shop.jobs.gone' " + "x" * 200,
        content_type="application/json", headers={"task": "shop.jobs.gone", "id": "dead-1"},
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
    online = Worker.objects.create(hostname="jobs@alive", pid=101, queues=["default", "mail"],
                                   pool="prefork", concurrency=4, processed=12)
    stopped = Worker.objects.create(hostname="jobs@gone", pid=202, queues=["default"],
                                    pool="threads", concurrency=8, stopped_at=now)
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


# Queued messages -----------------------------------------------------------------------------


def message(**fields) -> Message:
    payload = {"body": "W1tdLCB7fSwge31d", "headers": {"task": "shop.jobs.charge", "id": "m-1"},
               "properties": {"delivery_tag": "t"}}
    return Message.objects.create(queue="default", payload=json.dumps(payload), **fields)


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
    row = Message.objects.create(queue="default", payload="[not json")

    assert admin_client.get(change(row)).status_code == 200


def test_messages_can_be_deleted(admin_client):
    row = message()

    admin_client.post(reverse("admin:jobs_message_delete", args=[row.pk]), {"post": "yes"})

    assert not Message.objects.exists()


# Formatting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "text"), [
    (None, None), (0.0004, "400 µs"), (0.012, "12 ms"), (3.4, "3.40 s"), (125, "2 min 5 s"),
    (3780, "1 h 3 min"),
])
def test_runtime_is_formatted_for_people(seconds, text):
    assert format_runtime(seconds) == text
