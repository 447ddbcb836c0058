"""The admin of job results: the list with its filters, a job's page with its arguments,
outcome and related jobs, and the retry and revoke actions. The dashboard's URLs hang off it
(:class:`~jobs.admin.dashboard.DashboardViews`)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect, JsonResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import mark_safe

from jobs.admin.dashboard import DashboardViews
from jobs.admin.filters import DateRangeFilter, JobNameFilter, QueueFilter, StateFilter, WorkerFilter
from jobs.admin.operations import OperationError, retry_job, revoke_job
from jobs.admin.readonly import ReadOnlyAdmin
from jobs.display import (
    breakable,
    code_block,
    format_runtime,
    json_block,
    list_timestamp,
    progress,
    progress_bar,
    state_badge,
    state_style,
    timestamp,
)
from jobs.models import READY_STATES, JobRecord

#: Two overlapping sheets (an inline SVG: no font has to have the glyph).
COPY_ICON = mark_safe(
    '<svg width="12" height="12" viewBox="0 0 12 12" aria-hidden="true" fill="none" '
    'stroke="currentColor"><rect x="3.5" y="0.5" width="8" height="8" rx="1"/>'
    '<path d="M1.5 3.5v7a1 1 0 0 0 1 1h7"/></svg>')

#: Jobs it started, listed on a job's page; the rest are a link away.
CHILDREN_SHOWN = 10


@admin.register(JobRecord)
class JobRecordAdmin(DashboardViews, ReadOnlyAdmin):
    change_form_template = "admin/jobs/jobrecord/change_form.html"
    change_list_template = "admin/jobs/jobrecord/change_list.html"
    # Narrow enough to read at a glance beside the admin's navigation and the filters at
    # 1,400 pixels: a short id, times without today's date, the retries in the state's cell;
    # the queue is a filter and on the job's page.
    list_display = ("short_id", "name_label", "state_and_retries", "worker_label",
                    "runtime_label", "created_label", "done_label")
    list_display_links = None  # the id column links to the job itself, beside its copy button
    list_filter = (StateFilter, JobNameFilter, QueueFilter, WorkerFilter,
                   ("date_done", DateRangeFilter), ("date_created", DateRangeFilter))
    search_fields = ("job_id", "name", "args", "kwargs")
    show_facets = admin.ShowFacets.NEVER  # a count per choice over millions of rows
    ordering = ("-date_created",)
    list_defer = ("args", "kwargs", "result", "meta", "traceback")
    actions = ["retry", "revoke"]
    fieldsets = (
        (None, {"fields": ("job_id", "name", "state_label", "progress_label", "queue",
                           "worker")}),
        ("Arguments", {"fields": ("args_block", "kwargs_block")}),
        ("Outcome", {"fields": ("result_block", "meta_block", "traceback_block")}),
        ("Timing", {"fields": ("created", "started", "done", "runtime_label")}),
        ("Retries", {"fields": ("retries", "deliveries", "children_list")}),
        ("Related jobs", {"fields": ("parent_link", "root_link")}),
        ("Workflow", {"fields": ("group_label", "group_members")}),
    )
    readonly_fields = tuple(field for _, options in fieldsets for field in options["fields"])

    created = timestamp("date_created", "date created")
    started = timestamp("date_started", "date started")
    done = timestamp("date_done", "date done")
    created_label = list_timestamp("date_created", "created")
    done_label = list_timestamp("date_done", "done")
    args_block = json_block("args", "args")
    kwargs_block = json_block("kwargs", "kwargs")
    result_block = json_block("result", "result")
    meta_block = json_block("meta", "meta")

    #: Milliseconds between the polls of a running job's page.
    job_refresh = 2000

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            *self.dashboard_urls(),
            path("job/<str:job_id>/", view(self.job_view), name="jobs_jobrecord_job"),
            path("<path:object_id>/retry/", view(self.retry_view), name="jobs_jobrecord_retry"),
            path("<path:object_id>/revoke/", view(self.revoke_view),
                 name="jobs_jobrecord_revoke"),
            path("<path:object_id>/state.json", view(self.state_view),
                 name="jobs_jobrecord_state"),
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

    def state_view(self, request, object_id):
        """A job's state and progress, polled by its page while it runs (``jobs/job.js``)."""
        obj = self.get_object(request, object_id)
        if obj is None or not self.has_view_permission(request, obj):
            raise PermissionDenied
        return JsonResponse({"state": obj.state, "style": state_style(obj.state),
                             "ready": obj.state in READY_STATES, "progress": progress(obj.meta)})

    def job_view(self, request, job_id):
        """A job by its id: its page once a worker has recorded it, else the list, saying so."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        row = JobRecord.objects.filter(job_id=job_id).values_list("pk", flat=True).first()
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

    @admin.display(description="job id", ordering="job_id")
    def short_id(self, obj):
        """The id cut to its first characters on screen, so the list reads at a glance: the
        whole id shows on hover, and its button copies it (``jobs/copy.js``)."""
        url = reverse(self.url_name("change"), args=[obj.pk])
        return format_html(
            '<a class="jobs-id" href="{}" title="{}">{}</a>'
            '<button type="button" class="jobs-copy" data-copy="{}" title="Copy the whole id" '
            'aria-label="Copy job id {}">{}</button>', url, obj.job_id, obj.job_id, obj.job_id,
            obj.job_id, COPY_ICON)

    @admin.display(description="job name", ordering="name")
    def name_label(self, obj):
        return breakable(obj.name)

    @admin.display(description="worker", ordering="worker")
    def worker_label(self, obj):
        return breakable(obj.worker)

    @admin.display(description="state", ordering="state")
    def state_and_retries(self, obj):
        if not obj.retries:
            return state_badge(obj.state)
        return format_html('{} <span class="jobs-retries" title="retried {} times">↻{}</span>',
                           state_badge(obj.state), obj.retries, obj.retries)

    @admin.display(description="state", ordering="state")
    def state_label(self, obj):
        return state_badge(obj.state)

    @admin.display(description="progress")
    def progress_label(self, obj):
        """While the job runs, its progress bar (hidden until it reports current/total),
        which the page's poll of ``state.json`` keeps up to date."""
        if obj.state in READY_STATES:
            return None
        done = progress(obj.meta)
        url = reverse(self.url_name("state"), args=[obj.pk])
        box = ('<div id="jobs-job-progress" data-url="{}" data-refresh="{}">{}</div>' if done
               else '<div id="jobs-job-progress" data-url="{}" data-refresh="{}" hidden>{}</div>')
        return format_html(box, url, self.job_refresh, progress_bar(done))

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
        children = list(JobRecord.objects.filter(parent_id=obj.job_id)
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

    @admin.display(description="group")
    def group_label(self, obj):
        from jobs.admin.groups import group_link

        return group_link(obj.group_id) if obj.group_id else "none"

    @admin.display(description="jobs of its group")
    def group_members(self, obj):
        from jobs.admin.groups import member_list
        from jobs.models import GroupRecord

        group = GroupRecord.objects.filter(group_id=obj.group_id).first() if obj.group_id \
            else None
        return member_list(group, CHILDREN_SHOWN, current=obj.job_id) if group else None

    def _job_link(self, job_id: str, obj: JobRecord):
        if not job_id:
            return None
        if job_id == obj.job_id:
            return "this job"
        pk = JobRecord.objects.filter(job_id=job_id).values_list("pk", flat=True).first()
        if pk is None:
            return f"{job_id} (no result recorded)"
        url = reverse(self.url_name("change"), args=[pk])
        return format_html('<a href="{}">{}</a>', url, job_id)
