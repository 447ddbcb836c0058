"""Showing jobs to people: durations, times, state badges, code and JSON blocks, and what a
queued message carries.

Used by the admin pages of both apps and by the dashboard. It lives outside ``jobs.admin`` so
that ``jobs_beat``'s admin can use it without importing that package, which registers the
jobs ModelAdmins as it loads. Badge and code styles use the admin's CSS variables, so they
follow its light and dark themes.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django.contrib import admin
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import dateformat, timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from jobs.models import Message, States

#: Characters of a JSON value or traceback shown on a page; the rest is cut.
TEXT_LIMIT = 100_000
#: Bytes of a dead letter's body shown on its page.
BODY_LIMIT = 10 * 1024

STATE_STYLES = {
    States.PENDING: "pending",
    States.RECEIVED: "active",
    States.STARTED: "active",
    States.RETRY: "warning",
    States.SUCCESS: "success",
    States.FAILURE: "error",
    States.REVOKED: "muted",
}


def progress(meta) -> dict | None:
    """How far a running job has come, if its meta says (``update_state(state="PROGRESS",
    meta={"current": i, "total": n})``): ``current``, ``total`` and ``percent``; else None."""
    if not isinstance(meta, dict):
        return None
    current, total = meta.get("current"), meta.get("total")
    if not (_number(current) and _number(total)) or total <= 0:
        return None
    percent = max(0.0, min(100.0, 100 * current / total))
    return {"current": current, "total": total, "percent": round(percent, 1)}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def progress_bar(done: dict | None):
    """The bar of :func:`progress` (the job page's script updates it as the job goes on)."""
    done = done or {"current": 0, "total": 0, "percent": 0}
    return format_html(
        '<span class="jobs-progress" role="progressbar" aria-valuemin="0" aria-valuemax="{}" '
        'aria-valuenow="{}"><span style="width: {}%"></span></span>'
        '<span class="jobs-progress-text">{} / {} ({} %)</span>',
        done["total"], done["current"], done["percent"], done["current"], done["total"],
        done["percent"])


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


def format_time(value) -> str | None:
    """A datetime to the second, in the current time zone."""
    if value is None:
        return None
    if timezone.is_aware(value):
        value = timezone.localtime(value)
    return dateformat.format(value, "Y-m-d H:i:s")


def timestamp(field: str, description: str):
    """A column showing the datetime ``field`` to the second, in the current time zone."""

    @admin.display(description=description, ordering=field)
    def column(self, obj):
        return format_time(getattr(obj, field))

    return column


def list_timestamp(field: str, description: str):
    """A list column showing the datetime ``field`` at a glance: the time alone today, the
    day and minute this year, the date before; the full timestamp on hover."""

    @admin.display(description=description, ordering=field)
    def column(self, obj):
        value = getattr(obj, field)
        if value is None:
            return None
        local, today = timezone.localtime(value), timezone.localdate()
        shown = ("H:i:s" if local.date() == today else
                 "M j, H:i" if local.year == today.year else "Y-m-d")
        return format_html('<span title="{}">{}</span>', format_time(value),
                           dateformat.format(local, shown))

    return column


def breakable(text: str):
    """``text`` (a dotted job name, a worker's hostname) allowed to wrap after its dots and
    at signs, so a narrow column breaks it there rather than anywhere or nowhere."""
    parts = re.split(r"(?<=[.@])", text or "")
    return format_html_join(mark_safe("<wbr>"), "{}", ((part,) for part in parts))


def json_block(field: str, description: str):
    """A field showing the JSON value of ``field``, pretty-printed in a monospace block."""

    @admin.display(description=description)
    def block(self, obj):
        return pretty_json(getattr(obj, field))

    return block


def badge(text: str, style: str):
    """A small colored label; its colors are the admin's, so it follows the dark theme."""
    return format_html('<span class="jobs-badge jobs-badge-{}">{}</span>', style, text)


def state_style(state: str) -> str:
    """The badge style of ``state``; a custom state (PROGRESS...) is a running job's."""
    return STATE_STYLES.get(state, "active")


def state_badge(state: str):
    return badge(state, state_style(state))


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


def payload_headers(message: Message) -> dict:
    """The headers of a queued message's payload, or ``{}`` if it has none readable."""
    try:
        headers = json.loads(message.payload)["headers"]
    except (ValueError, TypeError, KeyError):
        return {}
    return headers if isinstance(headers, dict) else {}


def message_job_id(message: Message) -> str | None:
    """The id of the job a queued message carries, if it carries one."""
    job_id = payload_headers(message).get("id")
    return job_id if isinstance(job_id, str) and job_id else None
