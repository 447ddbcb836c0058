"""The admin of workers: their heartbeat rows, online or not, and the warm shutdown action."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from jobs.admin.filters import OnlineFilter
from jobs.admin.operations import OperationError, request_shutdown
from jobs.admin.readonly import ReadOnlyAdmin
from jobs.display import format_runtime, format_time, timestamp
from jobs.models import Worker


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin):
    change_form_template = "admin/jobs/worker/change_form.html"
    list_display = ("hostname", "pid", "queue_names", "pool", "concurrency", "online",
                    "seen", "started", "processed", "active", "held_back", "stop_requested")
    list_filter = (OnlineFilter, "pool", "hostname")
    search_fields = ("hostname",)
    ordering = ("-last_seen",)
    actions = ["shut_down"]
    fieldsets = (
        (None, {"fields": ("hostname", "pid", "online", "queue_names", "pool", "concurrency",
                           "broker")}),
        ("Activity", {"fields": ("started", "seen", "stopped", "stop_requested", "processed",
                                 "active", "held_back", "database_wait")}),
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

    @admin.display(description="held back")
    def held_back(self, obj):
        """Jobs waiting in the worker for their rate limit or eta, by name."""
        held = obj.held if isinstance(obj.held, dict) else {}
        return ", ".join(f"{name}: {count}" for name, count in sorted(held.items())) or "-"

    @admin.display(description="queues")
    def queue_names(self, obj):
        queues = obj.queues if isinstance(obj.queues, list) else [obj.queues]
        return ", ".join(map(str, queues))

    @admin.display(description="online", boolean=True)
    def online(self, obj):
        return obj.is_online
