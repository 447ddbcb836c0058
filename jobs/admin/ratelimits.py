"""The admin of rate limits changed at run time: one row per job whose limits differ from its
code's. Saving a row (or deleting it: the job's own limits again) tells the live workers at
once through the control channel; workers started later read the rows as they start."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db import transaction

from jobs import ratelimits, rates
from jobs.models import RateLimit, Worker
from jobs.registry import registry


class RateLimitForm(forms.ModelForm):
    name = forms.ChoiceField(label="Job", choices=())

    class Meta:
        model = RateLimit
        fields = ("name", "rate", "global_rate")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["name"].choices = [(name, name) for name in registry]

    def _rate(self, field: str) -> str:
        value = self.cleaned_data[field].strip()
        if rates.problem(value or None):
            raise forms.ValidationError(f"Write a rate as {rates.FORMAT}, or 0 for no limit.")
        return value

    def clean_rate(self):
        return self._rate("rate")

    def clean_global_rate(self):
        return self._rate("global_rate")


@admin.register(RateLimit)
class RateLimitAdmin(admin.ModelAdmin):
    form = RateLimitForm
    list_display = ("name", "per_worker", "across_workers", "waiting", "updated_at")
    search_fields = ("name",)

    @admin.display(description="per worker")
    def per_worker(self, obj):
        return _limit(obj.rate, obj.name, lambda job: job.rate_limit)

    @admin.display(description="across all workers")
    def across_workers(self, obj):
        return _limit(obj.global_rate, obj.name, ratelimits.global_rate)

    @admin.display(description="waiting now")
    def waiting(self, obj):
        """Deliveries the online workers hold back (as of their last heartbeat)."""
        held = Worker.objects.online().values_list("held", flat=True)
        return sum((counts or {}).get(obj.name, 0) for counts in held)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        self._tell_workers(request, obj.name)

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        self._tell_workers(request, obj.name)

    def delete_queryset(self, request, queryset):
        names = list(queryset.values_list("name", flat=True))
        super().delete_queryset(request, queryset)
        for name in names:
            self._tell_workers(request, name)

    def _tell_workers(self, request, name: str) -> None:
        # Once the row is committed (the admin saves in a transaction): the workers read it.
        transaction.on_commit(lambda: self._broadcast(request, name))

    def _broadcast(self, request, name: str) -> None:
        from jobs.control import broadcast

        try:
            answers = broadcast("rate_limit", {"job_name": name, "reload": True}, timeout=1.0)
        except Exception as exc:  # saved all the same: workers read it within seconds
            answers, problem = {}, f" ({exc})"
        else:
            problem = ""
        if answers:
            self.message_user(request, f"{len(answers)} live worker(s) apply the limits of "
                              f"{name} now.", messages.SUCCESS)
        else:
            self.message_user(request, f"No worker answered{problem}: each applies the limits "
                              f"of {name} within seconds, or when it starts.", messages.WARNING)


def _limit(value: str, name: str, own) -> str:
    if value.strip():
        return "none" if not rates.per_second(value) else value
    try:
        job_rate = own(registry.get(name))
    except KeyError:
        job_rate = None
    return f"{job_rate or 'none'} (the job's own)"
