"""The admin for jobs: results, dead letters, workers and the ``django://`` queue.

Everything here is read-only (rows are written by workers and brokers, never by hand) and
behind the admin's permissions: job arguments and results are possibly sensitive, so they
show only to users who may view job results. Deleting is allowed with the delete permission.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.serializers.json import DjangoJSONEncoder
from django.urls import reverse
from django.utils import dateformat, timezone
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.text import Truncator

from jobs.models import DeadLetter, JobResult, Message, States, Worker

#: Characters of a JSON value or traceback shown on a page; the rest is cut.
TEXT_LIMIT = 100_000
#: Bytes of a dead letter's body shown on its page.
BODY_LIMIT = 10 * 1024

_STATE_STYLES = {
    States.PENDING: "pending",
    States.RECEIVED: "active",
    States.STARTED: "active",
    States.RETRY: "warning",
    States.SUCCESS: "success",
    States.FAILURE: "error",
    States.REVOKED: "muted",
}


# Formatting ------------------------------------------------------------------------------


def format_runtime(seconds: float | None) -> str | None:
    """A duration for people: ``850 µs``, ``12 ms``, ``3.40 s``, ``2 min 5 s``, ``1 h 3 min``."""
    if seconds is None:
        return None
    if seconds < 0.001:
        return f"{seconds * 1_000_000:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def timestamp(field: str, description: str):
    """A column showing the datetime ``field`` to the second, in the current time zone."""

    @admin.display(description=description, ordering=field)
    def column(self, obj):
        value = getattr(obj, field)
        if value is None:
            return None
        if timezone.is_aware(value):
            value = timezone.localtime(value)
        return dateformat.format(value, "Y-m-d H:i:s")

    return column


def badge(text: str, style: str):
    """A small colored label; its colors are the admin's, so it follows the dark theme."""
    return format_html('<span class="jobs-badge jobs-badge-{}">{}</span>', style, text)


def state_badge(state: str):
    return badge(state, _STATE_STYLES.get(state, "other"))


def code_block(text: str, limit: int = TEXT_LIMIT):
    """``text`` in a monospace ``<pre>``, cut at ``limit`` characters."""
    if len(text) > limit:
        text = f"{text[:limit]}\n… ({len(text) - limit:,} more characters not shown)"
    return format_html('<pre class="jobs-code">{}</pre>', text)


def pretty_json(value: Any):
    if value is None:
        return None
    return code_block(json.dumps(value, indent=2, ensure_ascii=False, cls=DjangoJSONEncoder))


def body_text(body: bytes | memoryview | None, limit: int = BODY_LIMIT):
    """A message body as text (UTF-8, undecodable bytes replaced), cut at ``limit`` bytes."""
    if body is None:
        return None
    data = bytes(body)
    text = data[:limit].decode("utf-8", errors="replace")
    if len(data) > limit:
        text += f"\n… ({len(data):,} bytes in all; the first {limit:,} are shown)"
    return code_block(text)


# Shared behaviour ---------------------------------------------------------------------------


class DeferringChangeList(ChangeList):
    """A change list that leaves the model admin's ``list_defer`` columns unread.

    Arguments, results and bodies can be large; the list never shows them.
    """

    def get_queryset(self, request, exclude_parameters=None):
        queryset = super().get_queryset(request, exclude_parameters)
        defer = self.model_admin.list_defer
        return queryset.defer(*defer) if defer else queryset


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by workers: viewable and deletable, never added or edited by hand."""

    list_defer: tuple[str, ...] = ()
    list_per_page = 50
    show_full_result_count = False  # a COUNT(*) of a huge table on every page is too slow

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_changelist(self, request, **kwargs):
        return DeferringChangeList


# Job results --------------------------------------------------------------------------------


@admin.register(JobResult)
class JobResultAdmin(ReadOnlyAdmin):
    list_display = ("job_id", "name", "state_label", "queue", "worker", "retries",
                    "runtime_label", "created", "done")
    list_filter = ("state", "name", "queue", "worker", "date_done")
    search_fields = ("job_id", "name")
    date_hierarchy = "date_created"
    ordering = ("-date_created",)
    list_defer = ("args", "kwargs", "result", "meta", "traceback")
    fieldsets = (
        (None, {"fields": ("job_id", "name", "state_label", "queue", "worker", "retries")}),
        ("Arguments", {"fields": ("args_block", "kwargs_block")}),
        ("Outcome", {"fields": ("result_block", "meta_block", "traceback_block")}),
        ("Timing", {"fields": ("created", "started", "done", "runtime_label")}),
        ("Related jobs", {"fields": ("parent_link", "root_link", "children_link")}),
    )
    readonly_fields = tuple(field for _, options in fieldsets for field in options["fields"])

    created = timestamp("date_created", "date created")
    started = timestamp("date_started", "date started")
    done = timestamp("date_done", "date done")

    @admin.display(description="state", ordering="state")
    def state_label(self, obj):
        return state_badge(obj.state)

    @admin.display(description="runtime", ordering="runtime")
    def runtime_label(self, obj):
        return format_runtime(obj.runtime)

    @admin.display(description="args")
    def args_block(self, obj):
        return pretty_json(obj.args)

    @admin.display(description="kwargs")
    def kwargs_block(self, obj):
        return pretty_json(obj.kwargs)

    @admin.display(description="result")
    def result_block(self, obj):
        return pretty_json(obj.result)

    @admin.display(description="meta")
    def meta_block(self, obj):
        return pretty_json(obj.meta)

    @admin.display(description="traceback")
    def traceback_block(self, obj):
        return code_block(obj.traceback) if obj.traceback else None

    @admin.display(description="parent job")
    def parent_link(self, obj):
        return self._job_link(obj.parent_id, obj)

    @admin.display(description="root job")
    def root_link(self, obj):
        return self._job_link(obj.root_id, obj)

    @admin.display(description="jobs it started")
    def children_link(self, obj):
        url = reverse(f"{self.admin_site.name}:jobs_jobresult_changelist")
        return format_html('<a href="{}?{}">list them</a>', url,
                           urlencode({"parent_id": obj.job_id}))

    def _job_link(self, job_id: str, obj: JobResult):
        if not job_id:
            return None
        if job_id == obj.job_id:
            return "this job"
        pk = JobResult.objects.filter(job_id=job_id).values_list("pk", flat=True).first()
        if pk is None:
            return f"{job_id} (no result recorded)"
        url = reverse(f"{self.admin_site.name}:jobs_jobresult_change", args=[pk])
        return format_html('<a href="{}">{}</a>', url, job_id)


# Dead letters -------------------------------------------------------------------------------


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    list_display = ("created", "queue", "job_name", "job_id", "reason_short", "worker")
    list_filter = ("queue", "job_name")
    search_fields = ("job_id", "job_name", "reason")
    ordering = ("-date_created",)
    list_defer = ("headers", "properties", "body")
    fieldsets = (
        (None, {"fields": ("created", "queue", "job_name", "job_id", "worker")}),
        ("Why", {"fields": ("reason_block",)}),
        ("Message", {"fields": ("content_type", "content_encoding", "headers_block",
                                "properties_block", "body_block")}),
    )
    readonly_fields = tuple(field for _, options in fieldsets for field in options["fields"])

    created = timestamp("date_created", "date created")
    actions = ["requeue"]

    def has_requeue_permission(self, request):
        return request.user.has_perm("jobs.change_deadletter")

    @admin.action(description="Requeue selected messages", permissions=["requeue"])
    def requeue(self, request, queryset):
        done = 0
        for letter in queryset:
            try:
                letter.requeue()
                done += 1
            except Exception as exc:  # the broker is down: keep the letter, say why
                self.message_user(request, f"Could not requeue {letter}: {exc}",
                                  messages.ERROR)
        if done:
            self.message_user(request, f"Requeued {done} message(s).", messages.SUCCESS)

    @admin.display(description="reason", ordering="reason")
    def reason_short(self, obj):
        return Truncator(obj.reason).chars(80)

    @admin.display(description="reason")
    def reason_block(self, obj):
        return code_block(obj.reason)

    @admin.display(description="headers")
    def headers_block(self, obj):
        return pretty_json(obj.headers)

    @admin.display(description="properties")
    def properties_block(self, obj):
        return pretty_json(obj.properties)

    @admin.display(description="body")
    def body_block(self, obj):
        return body_text(obj.body)


# Workers ------------------------------------------------------------------------------------


class OnlineFilter(admin.SimpleListFilter):
    title = "online"
    parameter_name = "online"

    def lookups(self, request, model_admin):
        return (("yes", "Yes"), ("no", "No"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.online()
        if self.value() == "no":
            return queryset.exclude(pk__in=Worker.objects.online().values("pk"))
        return queryset


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin):
    list_display = ("hostname", "pid", "queue_names", "pool", "concurrency", "online",
                    "seen", "started", "processed", "active")
    list_filter = (OnlineFilter, "pool", "hostname")
    search_fields = ("hostname",)
    ordering = ("-last_seen",)
    fieldsets = (
        (None, {"fields": ("hostname", "pid", "online", "queue_names", "pool", "concurrency",
                           "broker")}),
        ("Activity", {"fields": ("started", "seen", "stopped", "processed", "active")}),
    )
    readonly_fields = tuple(field for _, options in fieldsets for field in options["fields"])

    started = timestamp("started_at", "started at")
    seen = timestamp("last_seen", "last seen")
    stopped = timestamp("stopped_at", "stopped at")

    @admin.display(description="queues")
    def queue_names(self, obj):
        queues = obj.queues if isinstance(obj.queues, list) else [obj.queues]
        return ", ".join(map(str, queues))

    @admin.display(description="online", boolean=True)
    def online(self, obj):
        return obj.is_online


# Queued messages (the django:// broker) ---------------------------------------------------


def message_status(message: Message, now=None) -> str:
    """``leased`` (a worker holds it), ``delayed`` (not due yet) or ``ready``."""
    now = now or timezone.now()
    if message.lease_until is not None and message.lease_until >= now:
        return "leased"
    if message.visible_at > now:
        return "delayed"
    return "ready"


_MESSAGE_STYLES = {"ready": "success", "delayed": "warning", "leased": "active"}


class MessageStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return (("ready", "Ready"), ("delayed", "Delayed"), ("leased", "Leased"))

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "leased":
            return queryset.filter(lease_until__gte=now)
        if self.value() == "delayed":
            return queryset.filter(visible_at__gt=now).exclude(lease_until__gte=now)
        if self.value() == "ready":
            return queryset.visible(now)
        return queryset


def payload_headers(message: Message) -> dict:
    """The headers of a queued message's payload, or ``{}`` if it has none readable."""
    try:
        headers = json.loads(message.payload)["headers"]
    except (ValueError, TypeError, KeyError):
        return {}
    return headers if isinstance(headers, dict) else {}


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    list_display = ("id", "queue", "priority", "due", "status", "delivery_count", "created")
    list_filter = ("queue", MessageStatusFilter)
    # Delivery order within a queue, which the claim index serves.
    ordering = ("queue", "priority", "id")
    list_defer = ("payload",)
    # The payload holds the job's arguments: only its name and id are shown here; arguments
    # show in the job's result, to users allowed to view job results.
    fieldsets = (
        (None, {"fields": ("id", "queue", "job_name", "job_id", "status", "priority", "due",
                           "created")}),
        ("Delivery", {"fields": ("delivery_tag", "delivery_count", "lease_owner",
                                 "leased_until")}),
    )
    readonly_fields = tuple(field for _, options in fieldsets for field in options["fields"])

    due = timestamp("visible_at", "due")
    created = timestamp("created_at", "created at")
    leased_until = timestamp("lease_until", "lease until")

    @admin.display(description="status")
    def status(self, obj):
        status = message_status(obj)
        return badge(status, _MESSAGE_STYLES[status])

    @admin.display(description="job name")
    def job_name(self, obj):
        name = payload_headers(obj).get("task")
        return name if isinstance(name, str) and name else None

    @admin.display(description="job id")
    def job_id(self, obj):
        job_id = payload_headers(obj).get("id")
        return job_id if isinstance(job_id, str) and job_id else None
