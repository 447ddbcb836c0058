"""Periodic tasks in the admin: schedules in words, next and last runs, run now, duplicate.

Saving a task here plans its next run at once; the scheduler reads the rows on every tick,
so an edit takes effect without a restart.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import OuterRef, Subquery
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from jobs.display import state_badge, timestamp
from jobs.models import JobRecord
from jobs_beat import scheduler
from jobs_beat.forms import CrontabScheduleForm, PeriodicTaskForm
from jobs_beat.models import ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask

STYLED_LIST = "admin/jobs/change_list.html"
STYLED_FORM = "admin/jobs/change_form.html"


class ScheduleKindFilter(admin.SimpleListFilter):
    title = "schedule"
    parameter_name = "schedule"

    def lookups(self, request, model_admin):
        return (("interval", "Interval"), ("crontab", "Crontab"), ("clocked", "Clocked"))

    def queryset(self, request, queryset):
        if self.value() in ("interval", "crontab", "clocked"):
            return queryset.filter(**{f"{self.value()}__isnull": False})
        return queryset


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(admin.ModelAdmin):
    form = PeriodicTaskForm
    change_list_template = STYLED_LIST
    change_form_template = STYLED_FORM
    list_display = ("name", "task", "schedule_words", "enabled", "next_run", "last_run",
                    "total_run_count", "last_result")
    list_filter = ("enabled", ScheduleKindFilter, "one_off", "from_settings", "task")
    search_fields = ("name", "task", "description")
    list_select_related = ("interval", "crontab", "clocked")
    ordering = ("name",)
    actions = ["enable", "disable", "run_now", "duplicate"]
    fieldsets = (
        (None, {"fields": ("name", "task", "enabled", "description", "from_settings")}),
        ("Schedule", {"fields": ("interval", "crontab", "clocked", "schedule_words",
                                 "start_time", "end_time", "one_off", "missed_runs")}),
        ("Arguments", {"fields": ("args", "kwargs")}),
        ("Sending", {"fields": ("queue", "priority", "expire_seconds")}),
        ("Runs", {"fields": ("next_run", "last_run", "total_run_count", "last_result")}),
    )
    readonly_fields = ("from_settings", "schedule_words", "next_run", "last_run",
                       "total_run_count", "last_result")

    next_run = timestamp("next_run_at", "next run")
    last_run = timestamp("last_run_at", "last run")

    def get_queryset(self, request):
        state = JobRecord.objects.filter(job_id=OuterRef("last_job_id")).values("state")[:1]
        return super().get_queryset(request).annotate(last_state=Subquery(state))

    @admin.display(description="schedule")
    def schedule_words(self, obj):
        return obj.describe_schedule() if obj.pk else None

    @admin.display(description="last result")
    def last_result(self, obj):
        if not obj.last_job_id:
            return None
        try:
            url = reverse(f"{self.admin_site.name}:jobs_jobrecord_changelist")
        except NoReverseMatch:
            return obj.last_job_id
        state = getattr(obj, "last_state", None)
        return format_html('<a href="{}?{}">{}</a>', url, urlencode({"q": obj.last_job_id}),
                           state_badge(state) if state else "sent")

    # Actions ---------------------------------------------------------------------------

    @admin.action(description="Enable selected periodic tasks", permissions=["change"])
    def enable(self, request, queryset):
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable selected periodic tasks", permissions=["change"])
    def disable(self, request, queryset):
        self._set_enabled(request, queryset, False)

    def _set_enabled(self, request, queryset, enabled: bool) -> None:
        changed = 0
        for task in queryset.filter(enabled=not enabled).with_schedules():
            task.enabled = enabled
            task.save(update_fields=["enabled", "date_changed"])  # plans the next run too
            changed += 1
        word = "Enabled" if enabled else "Disabled"
        self.message_user(request, f"{word} {changed} periodic task(s).", messages.SUCCESS)

    @admin.action(description="Run selected periodic tasks now", permissions=["change"])
    def run_now(self, request, queryset):
        sent = []
        for task in queryset:
            try:
                sent.append(f"{task.name} ({scheduler.run_now(task)})")
            except Exception as exc:  # wrong arguments, or the broker is down: say which
                self.message_user(request, f"Could not run {task.name}: {exc}", messages.ERROR)
        if sent:
            self.message_user(request, f"Sent {len(sent)} job(s): {', '.join(sent)}.",
                              messages.SUCCESS)

    @admin.action(description="Duplicate selected periodic tasks", permissions=["add"])
    def duplicate(self, request, queryset):
        names = []
        for task in queryset:
            copy = PeriodicTask.objects.get(pk=task.pk)
            copy.pk = copy.id = None
            copy._state.adding = True
            copy.name = _free_name(task.name)
            copy.enabled = False
            copy.from_settings = False
            copy.plan = copy.last_job_id = ""
            copy.next_run_at = copy.last_run_at = None
            copy.total_run_count = 0
            copy.save()
            names.append(copy.name)
        self.message_user(
            request, f"Duplicated as {', '.join(names)} (disabled until you enable them).",
            messages.SUCCESS)


def _free_name(name: str) -> str:
    base = f"{name} (copy"
    taken = set(PeriodicTask.objects.filter(name__startswith=base)
                .values_list("name", flat=True))
    candidate, number = f"{base})", 1
    while candidate in taken:
        number += 1
        candidate = f"{base} {number})"
    return candidate[:200]


# Schedules --------------------------------------------------------------------------------


@admin.register(IntervalSchedule)
class IntervalScheduleAdmin(admin.ModelAdmin):
    list_display = ("__str__", "every", "period")
    list_filter = ("period",)


@admin.register(CrontabSchedule)
class CrontabScheduleAdmin(admin.ModelAdmin):
    form = CrontabScheduleForm
    list_display = ("expression", "words", "timezone")
    list_filter = ("timezone",)
    search_fields = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
    fields = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year", "timezone",
              "words")
    readonly_fields = ("words",)

    @admin.display(description="in words")
    def words(self, obj):
        if not obj.pk:
            return None
        try:
            return obj.schedule.describe()
        except ValueError as exc:
            return f"invalid: {exc}"

    @admin.display(description="cron line")
    def expression(self, obj):
        return obj.expression


@admin.register(ClockedSchedule)
class ClockedScheduleAdmin(admin.ModelAdmin):
    list_display = ("clocked_time",)
    date_hierarchy = "clocked_time"
