"""The admin of job results: the list with its filters, a job's page with its arguments,
outcome and related jobs, and the retry and revoke actions. The dashboard's URLs hang off it
(:class:`~jobs.admin.dashboard.DashboardViews`)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from jobs.admin.dashboard import DashboardViews
from jobs.admin.filters import DateRangeFilter, JobNameFilter, QueueFilter, StateFilter, WorkerFilter
from jobs.admin.operations import OperationError, retry_job, revoke_job
from jobs.admin.readonly import ReadOnlyAdmin
from jobs.display import code_block, format_runtime, json_block, state_badge, timestamp
from jobs.models import READY_STATES, JobRecord

#: Jobs it started, listed on a job's page; the rest are a link away.
CHILDREN_SHOWN = 10


@admin.register(JobRecord)
class JobRecordAdmin(DashboardViews, ReadOnlyAdmin):
    change_form_template = "admin/jobs/jobrecord/change_form.html"
    change_list_template = "admin/jobs/jobrecord/change_list.html"
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
        ("Workflow", {"fields": ("group_label", "group_members")}),
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
            path("job/<str:job_id>/", view(self.job_view), name="jobs_jobrecord_job"),
            path("<path:object_id>/retry/", view(self.retry_view), name="jobs_jobrecord_retry"),
            path("<path:object_id>/revoke/", view(self.revoke_view),
                 name="jobs_jobrecord_revoke"),
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
