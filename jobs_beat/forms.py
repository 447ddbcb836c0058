"""Admin forms that make a bad periodic task impossible, or explain what is wrong with it."""

from __future__ import annotations

import zoneinfo
from functools import lru_cache

from django import forms
from django.core.exceptions import ValidationError

from jobs.options import queue_problem
from jobs.registry import registry
from jobs_beat.models import CrontabSchedule, PeriodicTask


@lru_cache(maxsize=1)
def timezone_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in sorted(zoneinfo.available_timezones())]


class PeriodicTaskForm(forms.ModelForm):
    task = forms.ChoiceField(label="Job", help_text="A job registered in this project.")
    args = forms.JSONField(required=False, initial=list, widget=forms.Textarea(attrs={"rows": 2}),
                           help_text='Positional arguments, a JSON list: [16, 16].')
    kwargs = forms.JSONField(required=False, initial=dict,
                             widget=forms.Textarea(attrs={"rows": 2}),
                             help_text='Keyword arguments, a JSON object: {"user_id": 42}.')

    class Meta:
        model = PeriodicTask
        fields = "__all__"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        choices = [("", "---------")] + [(name, name) for name in registry.names()]
        current = self.instance.task if self.instance.pk else None
        if current and current not in registry:
            choices.append((current, f"{current} (not registered)"))
        self.fields["task"].choices = choices

    def clean_task(self) -> str:
        name = self.cleaned_data["task"]
        if name not in registry:
            raise ValidationError(
                f"{name!r} is not a registered job; choose one of the jobs this project has.")
        return name

    def clean_args(self) -> list:
        value = self.cleaned_data.get("args")
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValidationError(f"Enter a JSON list such as [16, 16], not {_json_kind(value)}.")
        return value

    def clean_kwargs(self) -> dict:
        value = self.cleaned_data.get("kwargs")
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValidationError('Enter a JSON object such as {"user_id": 42}, not '
                                  f"{_json_kind(value)}.")
        return value

    def clean_queue(self) -> str:
        queue = self.cleaned_data.get("queue") or ""
        if queue and queue_problem(queue):
            raise ValidationError("A queue name is 1-200 letters, digits and _ . : -")
        return queue

    def clean(self):
        cleaned = super().clean()
        chosen = [name for name in ("interval", "crontab", "clocked") if cleaned.get(name)]
        if len(chosen) != 1:
            message = ("Choose exactly one schedule: an interval, a crontab or a clocked time"
                       + (f" (this task has {' and '.join(chosen)})." if chosen else "."))
            self.add_error("interval" if not chosen else chosen[0], message)
        self._check_fit(cleaned)
        start, end = cleaned.get("start_time"), cleaned.get("end_time")
        if start and end and end <= start:
            self.add_error("end_time", "The end time must come after the start time.")
        return cleaned

    def _check_fit(self, cleaned) -> None:
        name = cleaned.get("task")
        if name not in registry or "args" not in cleaned or "kwargs" not in cleaned:
            return
        job = registry.get(name)
        if not job.typing:
            return
        try:
            job.check_arguments(tuple(cleaned["args"]), cleaned["kwargs"])
        except TypeError as exc:
            self.add_error("args", f"The arguments don't fit the job: {exc}.")


class CrontabScheduleForm(forms.ModelForm):
    timezone = forms.ChoiceField(choices=timezone_choices,
                                 help_text="The zone the times are in; daylight saving time "
                                           "is followed.")

    class Meta:
        model = CrontabSchedule
        fields = "__all__"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.instance.pk:
            self.initial.setdefault("timezone", self.instance.timezone)


def _json_kind(value) -> str:
    return {dict: "an object", str: "a string", bool: "true/false", int: "a number",
            float: "a number"}.get(type(value), "that")
