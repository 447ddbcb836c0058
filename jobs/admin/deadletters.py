"""The admin of dead letters: why each message was refused, what it carried, and the requeue
action."""

from __future__ import annotations

from django.contrib import admin
from django.utils.text import Truncator

from jobs.admin.readonly import ReadOnlyAdmin
from jobs.display import body_text, code_block, json_block, timestamp
from jobs.models import DeadLetter


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
