"""The admin for jobs: results, workers, queued and delayed messages, dead letters, and the
dashboard (``jobs/jobresult/dashboard/``, linked from the admin index).

Rows are written by workers and brokers, never edited by hand. What an operator may do to them
are actions, each behind a permission:

* job results: retry and revoke (change permission), delete (delete permission);
* workers: shut down (change permission on workers);
* queued messages: run a delayed job now and revoke (change permission), delete (delete
  permission; the job is recorded REVOKED, so nothing disappears silently);
* dead letters: requeue (change permission), delete.

Job arguments and results are possibly sensitive: they show only on the pages of job results
and dead letters, to users who may view those. Every action is a POST through the admin, with
its CSRF protection.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.text import Truncator

from jobs.dashboard import DashboardViews
from jobs.display import (  # noqa: F401  (re-exported: jobs_beat's admin uses them)
    BODY_LIMIT,
    TEXT_LIMIT,
    badge,
    body_text,
    code_block,
    format_runtime,
    format_time,
    json_block,
    pretty_json,
    state_badge,
    timestamp,
)
from jobs.filters import (
    DateRangeFilter,
    JobNameFilter,
    MessageStatusFilter,
    OnlineFilter,
    QueueFilter,
    StateFilter,
    WorkerFilter,
    message_status,
)
from jobs.models import READY_STATES, DeadLetter, JobResult, Message, Worker
from jobs.operations import (
    OperationError,
    message_job_id,
    payload_headers,
    request_shutdown,
    retry_job,
    revoke_job,
    revoke_message,
    run_now,
)

#: Jobs it started, listed on a job's page; the rest are a link away.
CHILDREN_SHOWN = 10

if admin.site.index_template is None:
    # The admin index gets a "Jobs monitoring" box linking the dashboard (for users who may
    # view job results). A project with its own index template can include
    # "admin/jobs/monitoring_links.html" in it.
    admin.site.index_template = "admin/jobs/index.html"


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

    def may(self, request, action: str) -> bool:
        """Whether the user holds ``action`` ("change", "delete", ...) on this model."""
        opts = self.model._meta
        return request.user.has_perm(f"{opts.app_label}.{action}_{opts.model_name}")

    def get_changelist(self, request, **kwargs):
        return DeferringChangeList

    def url_name(self, view: str) -> str:
        """The name of one of this model's admin URLs: ``url_name("change")``."""
        opts = self.model._meta
        return f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_{view}"

    def object_action(self, request, object_id, permission: str, action):
        """A POST from an object's page: the list ``action`` on that one object, then back
        to its page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.may(request, permission):
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.model._meta, object_id)
        action(request, self.model._default_manager.filter(pk=obj.pk))
        return HttpResponseRedirect(reverse(self.url_name("change"), args=[obj.pk]))

    def report(self, request, done: list, failed: list[tuple[object, str]], *, success: str,
               failure: str) -> None:
        """Tell the user what an action did: one line for the done, one per failure
        (``failure`` names ``{obj}`` and ``{reason}``)."""
        for obj, reason in failed:
            self.message_user(request, failure.format(obj=obj, reason=reason), messages.ERROR)
        if done:
            items = format_html_join(", ", "{}", ((item,) for item in done))
            self.message_user(request, format_html("{}: {}", success, items), messages.SUCCESS)


# Job results --------------------------------------------------------------------------------


@admin.register(JobResult)
class JobResultAdmin(DashboardViews, ReadOnlyAdmin):
    change_form_template = "admin/jobs/jobresult/change_form.html"
    change_list_template = "admin/jobs/jobresult/change_list.html"
    list_display = ("job_id", "name", "state_label", "queue", "worker", "retries",
                    "runtime_label", "created", "done")
    list_filter = (StateFilter, JobNameFilter, QueueFilter, WorkerFilter,
                   ("date_done", DateRangeFilter), ("date_created", DateRangeFilter))
    search_fields = ("job_id", "name", "args", "kwargs")
    show_facets = admin.ShowFacets.NEVER  # a count per choice over millions of rows
    ordering = ("-date_created",)
    list_defer = ("args", "kwargs", "result", "meta", "traceback")
    actions = ["retry", "revoke"]
    fieldsets = (
        (None, {"fields": ("job_id", "name", "state_label", "queue", "worker")}),
        ("Arguments", {"fields": ("args_block", "kwargs_block")}),
        ("Outcome", {"fields": ("result_block", "meta_block", "traceback_block")}),
        ("Timing", {"fields": ("created", "started", "done", "runtime_label")}),
        ("Retries", {"fields": ("retries", "deliveries", "children_list")}),
        ("Related jobs", {"fields": ("parent_link", "root_link")}),
    )
    readonly_fields = tuple(field for _, options in fieldsets for field in options["fields"])

    created = timestamp("date_created", "date created")
    started = timestamp("date_started", "date started")
    done = timestamp("date_done", "date done")
    args_block = json_block("args", "args")
    kwargs_block = json_block("kwargs", "kwargs")
    result_block = json_block("result", "result")
    meta_block = json_block("meta", "meta")

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            *self.dashboard_urls(),
            path("job/<str:job_id>/", view(self.job_view), name="jobs_jobresult_job"),
            path("<path:object_id>/retry/", view(self.retry_view), name="jobs_jobresult_retry"),
            path("<path:object_id>/revoke/", view(self.revoke_view),
                 name="jobs_jobresult_revoke"),
            *super().get_urls(),
        ]

    def get_search_results(self, request, queryset, search_term):
        """A whole job id finds its job through the unique index, at once; anything else is
        looked for in ids, names and arguments (a scan of the table)."""
        term = search_term.strip()
        if term and " " not in term:
            exact = queryset.filter(job_id=term)
            if exact.exists():
                return exact, False
        return super().get_search_results(request, queryset, search_term)

    # Actions -------------------------------------------------------------------------------

    def has_retry_permission(self, request):
        return self.may(request, "change")

    has_revoke_permission = has_retry_permission

    @admin.action(description="Retry selected jobs (run again with the same arguments)",
                  permissions=["retry"])
    def retry(self, request, queryset):
        done, failed = [], []
        for row in queryset:
            if row.state not in READY_STATES:
                failed.append((row, f"it is {row.state}, not finished; revoke it first"))
                continue
            try:
                new = retry_job(row)
            except OperationError as exc:
                failed.append((row, str(exc)))
                continue
            url = reverse(self.url_name("job"), args=[new.id])
            done.append(format_html('{} as <a href="{}">{}</a>', row.job_id, url, new.id))
        self.report(request, done, failed, success="Retried",
                    failure="Could not retry {obj}: {reason}")

    @admin.action(description="Revoke selected jobs (queued and delayed ones won't run; "
                              "running ones are stopped where the pool allows)",
                  permissions=["revoke"])
    def revoke(self, request, queryset):
        done, failed = [], []
        for row in queryset:
            if row.state in READY_STATES:
                failed.append((row, f"it has finished ({row.state})"))
                continue
            revoke_job(row)
            done.append(row.job_id)
        self.report(request, done, failed, success="Revoked",
                    failure="Could not revoke {obj}: {reason}")

    def retry_view(self, request, object_id):
        return self.object_action(request, object_id, "change", self.retry)

    def revoke_view(self, request, object_id):
        return self.object_action(request, object_id, "change", self.revoke)

    def job_view(self, request, job_id):
        """A job by its id: its page once a worker has recorded it, else the list, saying so."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        row = JobResult.objects.filter(job_id=job_id).values_list("pk", flat=True).first()
        if row is not None:
            return HttpResponseRedirect(reverse(self.url_name("change"), args=[row]))
        self.message_user(request, f"Job {job_id} has no result yet: it waits for a worker.",
                          messages.INFO)
        url = reverse(self.url_name("changelist"))
        return HttpResponseRedirect(f"{url}?{urlencode({'job_id': job_id})}")

    def render_change_form(self, request, context, add=False, change=False, form_url="",
                           obj=None):
        if obj is not None:
            may_act = self.may(request, "change")
            context["can_retry"] = may_act and obj.state in READY_STATES
            context["can_revoke"] = may_act and obj.state not in READY_STATES
        return super().render_change_form(request, context, add, change, form_url, obj)

    # Columns and fields --------------------------------------------------------------------

    @admin.display(description="state", ordering="state")
    def state_label(self, obj):
        return state_badge(obj.state)

    @admin.display(description="runtime", ordering="runtime")
    def runtime_label(self, obj):
        return format_runtime(obj.runtime)

    @admin.display(description="traceback")
    def traceback_block(self, obj):
        return code_block(obj.traceback) if obj.traceback else None

    @admin.display(description="parent job")
    def parent_link(self, obj):
        return self._job_link(obj.parent_id, obj)

    @admin.display(description="root job")
    def root_link(self, obj):
        return self._job_link(obj.root_id, obj)

    @admin.display(description="retried as / jobs it started")
    def children_list(self, obj):
        children = list(JobResult.objects.filter(parent_id=obj.job_id)
                        .order_by("date_created").only("pk", "job_id", "state", "name")
                        [:CHILDREN_SHOWN + 1])
        url = reverse(self.url_name("changelist"))
        everything = format_html('<a href="{}?{}">list them</a>', url,
                                 urlencode({"parent_id": obj.job_id}))
        if not children:
            return "none"
        items = format_html_join("", '<li><a href="{}">{}</a> {} {}</li>', (
            (reverse(self.url_name("change"), args=[child.pk]), child.job_id,
             state_badge(child.state), child.name if child.name != obj.name else "")
            for child in children[:CHILDREN_SHOWN]))
        more = everything if len(children) > CHILDREN_SHOWN else ""
        return format_html('<ul class="jobs-children">{}</ul>{}', items, more)

    def _job_link(self, job_id: str, obj: JobResult):
        if not job_id:
            return None
        if job_id == obj.job_id:
            return "this job"
        pk = JobResult.objects.filter(job_id=job_id).values_list("pk", flat=True).first()
        if pk is None:
            return f"{job_id} (no result recorded)"
        url = reverse(self.url_name("change"), args=[pk])
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
    headers_block = json_block("headers", "headers")
    properties_block = json_block("properties", "properties")
    actions = ["requeue"]

    def has_requeue_permission(self, request):
        return self.may(request, "change")

    @admin.action(description="Requeue selected messages", permissions=["requeue"])
    def requeue(self, request, queryset):
        done, failed = [], []
        for letter in queryset:
            try:
                letter.requeue()
                done.append(letter.job_id or letter.pk)
            except Exception as exc:  # the broker is down: keep the letter, say why
                failed.append((letter, str(exc)))
        self.report(request, done, failed, success="Requeued",
                    failure="Could not requeue {obj}: {reason}")

    @admin.display(description="reason", ordering="reason")
    def reason_short(self, obj):
        return Truncator(obj.reason).chars(80)

    @admin.display(description="reason")
    def reason_block(self, obj):
        return code_block(obj.reason)

    @admin.display(description="body")
    def body_block(self, obj):
        return body_text(obj.body)


# Workers ------------------------------------------------------------------------------------


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin):
    change_form_template = "admin/jobs/worker/change_form.html"
    list_display = ("hostname", "pid", "queue_names", "pool", "concurrency", "online",
                    "seen", "started", "processed", "active", "stop_requested")
    list_filter = (OnlineFilter, "pool", "hostname")
    search_fields = ("hostname",)
    ordering = ("-last_seen",)
    actions = ["shut_down"]
    fieldsets = (
        (None, {"fields": ("hostname", "pid", "online", "queue_names", "pool", "concurrency",
                           "broker")}),
        ("Activity", {"fields": ("started", "seen", "stopped", "stop_requested", "processed",
                                 "active", "database_wait")}),
    )
    readonly_fields = tuple(field for _, options in fieldsets for field in options["fields"])

    started = timestamp("started_at", "started at")
    seen = timestamp("last_seen", "last seen")
    stopped = timestamp("stopped_at", "stopped at")
    stop_requested = timestamp("stop_requested_at", "shutdown requested")

    @admin.display(description="last wait for the database")
    def database_wait(self, obj):
        """Written once the database is back: a worker can't write while it waits."""
        if obj.database_wait is None:
            return None
        return (f"{format_runtime(obj.database_wait)}, from {format_time(obj.database_lost_at)} "
                f"to {format_time(obj.database_back_at)}")

    def get_urls(self):
        view = self.admin_site.admin_view(self.shutdown_view)
        return [path("<path:object_id>/shutdown/", view, name="jobs_worker_shutdown"),
                *super().get_urls()]

    def has_shut_down_permission(self, request):
        return self.may(request, "change")

    @admin.action(description="Shut down selected workers (warm: running jobs finish)",
                  permissions=["shut_down"])
    def shut_down(self, request, queryset):
        done, failed = [], []
        for worker in queryset:
            try:
                request_shutdown(worker)
                done.append(worker)
            except OperationError as exc:
                failed.append((worker, str(exc)))
        self.report(request, done, failed, success="Asked to shut down",
                    failure="Could not ask {obj} to shut down: {reason}")

    def shutdown_view(self, request, object_id):
        return self.object_action(request, object_id, "change", self.shut_down)

    def render_change_form(self, request, context, add=False, change=False, form_url="",
                           obj=None):
        if obj is not None:
            context["can_shut_down"] = (self.may(request, "change") and obj.stopped_at is None
                                        and obj.stop_requested_at is None)
        return super().render_change_form(request, context, add, change, form_url, obj)

    @admin.display(description="queues")
    def queue_names(self, obj):
        queues = obj.queues if isinstance(obj.queues, list) else [obj.queues]
        return ", ".join(map(str, queues))

    @admin.display(description="online", boolean=True)
    def online(self, obj):
        return obj.is_online


# Queued and delayed messages ------------------------------------------------------------------


_MESSAGE_STYLES = {"ready": "success", "delayed": "warning", "leased": "active"}


class MessageChangeList(DeferringChangeList):
    """Reads the recorded state of the listed jobs in one query, for the "job state" column."""

    def get_results(self, request):
        super().get_results(request)
        ids = {message: message_job_id(message) for message in self.result_list}
        states = dict(JobResult.objects.filter(job_id__in=set(ids.values()) - {None})
                      .values_list("job_id", "state"))
        for message, job_id in ids.items():
            message.job_state = states.get(job_id)


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    list_display = ("id", "queue", "job_name", "job_id", "job_state", "due", "status",
                    "delivery_count")
    list_filter = ("queue", MessageStatusFilter)
    # Delivery order within a queue, which the claim index serves.
    ordering = ("queue", "priority", "id")
    actions = ["run_now", "revoke"]
    # The payload holds the job's arguments: only its name and id are shown here; arguments
    # show in the job's result, to users allowed to view job results.
    fieldsets = (
        (None, {"fields": ("id", "queue", "job_name", "job_id", "job_state", "status",
                           "priority", "due", "created")}),
        ("Delivery", {"fields": ("delivery_tag", "delivery_count", "lease_owner",
                                 "leased_until")}),
    )
    readonly_fields = tuple(field for _, options in fieldsets for field in options["fields"])

    due = timestamp("visible_at", "due")
    created = timestamp("created_at", "created at")
    leased_until = timestamp("lease_until", "lease until")

    def get_changelist(self, request, **kwargs):
        return MessageChangeList

    def has_run_now_permission(self, request):
        return self.may(request, "change")

    has_revoke_permission = has_run_now_permission

    @admin.action(description="Run selected delayed jobs now", permissions=["run_now"])
    def run_now(self, request, queryset):
        selected = queryset.count()
        moved = run_now(queryset)
        skipped = selected - moved
        if moved:
            self.message_user(request, f"{moved} delayed job(s) are due now.", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"{skipped} message(s) were not delayed: left as they "
                              "were.", messages.WARNING)

    @admin.action(description="Revoke selected jobs (they won't run)", permissions=["revoke"])
    def revoke(self, request, queryset):
        done, failed = [], []
        for message in queryset:
            job_id = revoke_message(message)
            if job_id:
                done.append(job_id)
            else:
                failed.append((message, "it is not a job"))
        self.report(request, done, failed, success="Revoked",
                    failure="Could not revoke {obj}: {reason}")

    def delete_model(self, request, obj):
        revoke_message(obj, reason="deleted from the admin")
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for message in queryset:
            revoke_message(message, reason="deleted from the admin")
        super().delete_queryset(request, queryset)

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
        return message_job_id(obj)

    @admin.display(description="job state")
    def job_state(self, obj):
        if not hasattr(obj, "job_state"):  # the detail page: one message, one query
            job_id = message_job_id(obj)
            obj.job_state = JobResult.objects.filter(job_id=job_id).values_list(
                "state", flat=True).first() if job_id else None
        return state_badge(obj.job_state) if obj.job_state else None
