"""The admin of queued and delayed messages (the ``django://`` transport's rows): their status,
the job each carries and its recorded state, and the run-now, revoke and delete actions."""

from __future__ import annotations

from django.contrib import admin, messages

from jobs.admin.filters import MessageStatusFilter, message_status
from jobs.admin.operations import revoke_message, run_now
from jobs.admin.readonly import DeferringChangeList, ReadOnlyAdmin
from jobs.display import badge, message_job_id, payload_headers, state_badge, timestamp
from jobs.models import JobRecord, Message

_MESSAGE_STYLES = {"ready": "success", "delayed": "warning", "leased": "active"}


class MessageChangeList(DeferringChangeList):
    """Reads the recorded state of the listed jobs in one query, for the "job state" column."""

    def get_results(self, request):
        super().get_results(request)
        ids = {message: message_job_id(message) for message in self.result_list}
        states = dict(JobRecord.objects.filter(job_id__in=set(ids.values()) - {None})
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
            obj.job_state = JobRecord.objects.filter(job_id=job_id).values_list(
                "state", flat=True).first() if job_id else None
        return state_badge(obj.job_state) if obj.job_state else None
