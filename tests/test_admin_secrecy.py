"""Job arguments and results are possibly sensitive: no admin page shows them to staff who
lack the permission to view the rows that hold them."""

from __future__ import annotations

import itertools

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import NoReverseMatch, reverse

from jobs.models import Message
from project.demo import jobs as demo
from tests import factories

pytestmark = pytest.mark.django_db

SECRET = "4242-4242-4242-4242"
RESULT_SECRET = "s3cr3t-result-token"


@pytest.fixture
def rows(settings):
    """A result, a dead letter and a queued message that each carry the secret."""
    settings.JOBS = {**settings.JOBS, "BROKER_URL": "django://"}
    handle = demo.add.delay(SECRET, "-x")  # a row of the database broker's queue
    result = factories.record(name=factories.ADD, args=[SECRET, "-x"], result=RESULT_SECRET)
    letter = factories.dead_letter(
        job_id="d-1", job_name=factories.ADD, reason="bad signature",
        headers={"task": factories.ADD, "id": "d-1", "argsrepr": repr((SECRET,))},
        body=f'[["{SECRET}"], {{}}, {{}}]'.encode())
    worker = factories.worker_row()
    message = Message.objects.get()
    assert SECRET in message.payload
    return {"result": result, "letter": letter, "message": message, "worker": worker,
            "handle": handle}


@pytest.fixture
def staff(django_user_model):
    """A client logged in as a new staff user holding only the given jobs permissions."""
    made = itertools.count()

    def login(*codenames: str) -> Client:
        user = django_user_model.objects.create_user(f"staff-{next(made)}", is_staff=True)
        user.user_permissions.add(*Permission.objects.filter(
            content_type__app_label="jobs", codename__in=codenames))
        client = Client()
        client.force_login(user)
        return client

    return login


def pages(rows) -> list[str]:
    """Every admin page of the jobs app that could show a job's arguments or result."""
    urls = [reverse("admin:index"), reverse("admin:app_list", args=["jobs"])]
    for model in ("jobrecord", "deadletter", "message", "worker"):
        urls.append(reverse(f"admin:jobs_{model}_changelist"))
    for key in ("result", "letter", "message", "worker"):
        obj = rows[key]
        urls.append(reverse(f"admin:jobs_{obj._meta.model_name}_change", args=[obj.pk]))
    try:
        urls.append(reverse("admin:jobs_jobrecord_job", args=[rows["result"].job_id]))
    except NoReverseMatch:
        pass
    return urls


def shown(client, urls) -> dict[str, int]:
    """The status of each page that showed a secret, by URL."""
    leaks = {}
    for url in urls:
        response = client.get(url, follow=True)
        text = response.content.decode(errors="replace")
        if SECRET in text or RESULT_SECRET in text:
            leaks[url] = response.status_code
    return leaks


def test_staff_without_any_jobs_permission_see_no_arguments_anywhere(staff, rows):
    assert shown(staff(), pages(rows)) == {}


def test_staff_who_may_view_workers_and_queued_messages_see_no_arguments(staff, rows):
    client = staff("view_worker", "view_message")

    assert client.get(reverse("admin:jobs_message_change", args=[rows["message"].pk])
                      ).status_code == 200
    assert shown(client, pages(rows)) == {}


def test_dead_letters_show_their_body_only_with_their_view_permission(staff, rows):
    url = reverse("admin:jobs_deadletter_change", args=[rows["letter"].pk])

    refused = staff("view_jobrecord").get(url)
    assert refused.status_code == 403
    assert SECRET not in refused.content.decode()
    assert SECRET in staff("view_deadletter").get(url).content.decode()


def test_the_view_permission_on_results_shows_arguments_and_results(staff, rows):
    client = staff("view_jobrecord")

    response = client.get(reverse("admin:jobs_jobrecord_change", args=[rows["result"].pk]))

    assert SECRET in response.content.decode()
    assert RESULT_SECRET in response.content.decode()



def test_even_a_superuser_sees_arguments_only_on_result_and_dead_letter_pages(
        admin_client, rows):
    leaks = shown(admin_client, pages(rows))

    assert reverse("admin:jobs_jobrecord_change", args=[rows["result"].pk]) in leaks
    assert reverse("admin:jobs_deadletter_change", args=[rows["letter"].pk]) in leaks
    assert all("/jobrecord/" in url or "/deadletter/" in url for url in leaks), leaks
