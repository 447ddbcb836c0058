"""Workflows in the admin: a job's page shows its parent, its children and its group's jobs
with their states and links; a group or chord has a page of its own."""

from __future__ import annotations

import pytest
from django.urls import reverse

from jobs.models import GroupRecord, JobRecord, States
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def chord_rows():
    group = GroupRecord.objects.create(
        group_id="g-1", job_ids=["m-0", "m-1", "m-2"], size=3, done=1,
        body={"task": "shop.jobs.total", "args": [], "kwargs": {}, "options": {"task_id": "b-1"},
              "subtask_type": None, "immutable": False},
        body_state=GroupRecord.BodyState.WAITING, parent_id="p-1")
    parent = factories.record(job_id="p-1", name="shop.jobs.start", state=States.SUCCESS)
    first = factories.record(job_id="m-0", name="shop.jobs.part", state=States.SUCCESS,
                             parent_id="p-1", group_id="g-1")
    second = factories.record(job_id="m-1", name="shop.jobs.part", state=States.FAILURE,
                              parent_id="p-1", group_id="g-1")
    return group, parent, first, second


def change(obj) -> str:
    return reverse(f"admin:jobs_{obj._meta.model_name}_change", args=[obj.pk])


def test_a_jobs_page_shows_its_parent_and_its_groups_jobs_with_states_and_links(
        admin_client, chord_rows):
    group, parent, first, second = chord_rows
    page = admin_client.get(change(first)).content.decode()

    assert f'href="{change(parent)}">p-1</a>' in page
    assert f'href="{change(group)}">g-1</a>' in page
    assert "<strong>m-0 (this job)</strong>" in page
    assert f'href="{change(second)}">m-1</a> <span class="jobs-badge jobs-badge-error">' in page
    assert "m-2 <span class=\"jobs-badge jobs-badge-pending\">PENDING" in page


def test_a_parents_page_lists_the_jobs_it_started(admin_client, chord_rows):
    _, parent, first, second = chord_rows
    page = admin_client.get(change(parent)).content.decode()
    assert f'href="{change(first)}">m-0</a>' in page and f'href="{change(second)}">m-1</a>' in page


def test_a_chord_has_a_page_with_its_jobs_in_order_and_its_body(admin_client, chord_rows):
    group, *_ = chord_rows
    page = admin_client.get(change(group)).content.decode()

    assert page.index(">m-0</a>") < page.index(">m-1</a>") < page.index("m-2 ")
    assert "shop.jobs.total" in page
    assert reverse("admin:jobs_jobrecord_job", args=["b-1"]) in page
    assert "Waiting for the header" in page
    listing = admin_client.get(reverse("admin:jobs_grouprecord_changelist")).content.decode()
    assert "g-1" in listing and "chord" in listing


def test_a_group_page_needs_its_permission(staff_client, chord_rows):
    group, *_ = chord_rows
    client = staff_client("view_jobrecord")
    assert client.get(change(group)).status_code == 403
    assert JobRecord.objects.count() == 3
