"""The admin of groups and chords: each has a page listing its jobs in order with their
states, and a chord its body and how far its header has got. Job pages link here."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from jobs.admin.readonly import ReadOnlyAdmin
from jobs.display import state_badge, timestamp
from jobs.models import GroupRecord, JobRecord, States

#: Jobs listed on a group's page; the rest are a link away (the results list, filtered).
MEMBERS_SHOWN = 200


@admin.register(GroupRecord)
class GroupRecordAdmin(ReadOnlyAdmin):
    list_display = ("group_id", "kind", "size", "done", "body_state", "created")
    list_filter = ("body_state",)
    search_fields = ("group_id", "root_id", "parent_id")
    ordering = ("-date_created",)
    list_defer = ("job_ids", "body")
    fieldsets = (
        (None, {"fields": ("group_id", "kind", "size", "created", "finished")}),
        ("Chord", {"fields": ("body_state", "done", "body_task", "body_link")}),
        ("Jobs", {"fields": ("members",)}),
        ("Related jobs", {"fields": ("parent_link", "root_link")}),
    )
    readonly_fields = tuple(field for _, options in fieldsets for field in options["fields"])

    created = timestamp("date_created", "date created")
    finished = timestamp("date_done", "chord done")

    @admin.display(description="kind")
    def kind(self, obj):
        return "chord" if obj.body else "group"

    @admin.display(description="body")
    def body_task(self, obj):
        # Its arguments show on the body job's page, to those who may see job arguments.
        return (obj.body or {}).get("task")

    @admin.display(description="body job")
    def body_link(self, obj):
        return job_link(obj.body_id) if obj.body_id else None

    @admin.display(description="parent job")
    def parent_link(self, obj):
        return job_link(obj.parent_id) if obj.parent_id else None

    @admin.display(description="root job")
    def root_link(self, obj):
        return job_link(obj.root_id) if obj.root_id else None

    @admin.display(description="jobs, in order")
    def members(self, obj):
        return member_list(obj, MEMBERS_SHOWN)


def member_list(group: GroupRecord, limit: int, current: str | None = None):
    """The group's jobs in order, each with its state and a link to its page."""
    ids = group.job_ids[:limit]
    rows = {row.job_id: row for row in JobRecord.objects.filter(job_id__in=ids).order_by()
            .only("pk", "job_id", "state", "name")}
    items = format_html_join("", "<li>{}</li>", (
        (format_html("{} {} {}", _member_link(job_id, rows.get(job_id), current),
                     state_badge(rows[job_id].state if job_id in rows else States.PENDING),
                     rows[job_id].name if job_id in rows else ""),)
        for job_id in ids))
    more = ""
    if len(group.job_ids) > limit:
        url = reverse("admin:jobs_jobrecord_changelist")
        more = format_html('<a href="{}?{}">all {} jobs</a>', url,
                           urlencode({"group_id": group.group_id}), len(group.job_ids))
    return format_html('<ol class="jobs-children">{}</ol>{}', items, more)


def _member_link(job_id: str, row, current: str | None):
    if job_id == current:
        return format_html("<strong>{} (this job)</strong>", job_id)
    if row is None:
        return job_id
    return format_html('<a href="{}">{}</a>', reverse("admin:jobs_jobrecord_change",
                                                      args=[row.pk]), job_id)


def job_link(job_id: str):
    """A link to a job's page (which says so if no worker has recorded it yet)."""
    return format_html('<a href="{}">{}</a>', reverse("admin:jobs_jobrecord_job",
                                                      args=[job_id]), job_id)


def group_link(group_id: str):
    pk = GroupRecord.objects.filter(group_id=group_id).values_list("pk", flat=True).first()
    if pk is None:
        return f"{group_id} (not stored)"
    return format_html('<a href="{}">{}</a>', reverse("admin:jobs_grouprecord_change",
                                                      args=[pk]), group_id)
