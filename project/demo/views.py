"""The demo page: enqueue jobs with ``.delay()`` and watch their states change."""

from __future__ import annotations

import json
import logging
import random
from datetime import datetime

from django import forms
from django.contrib import messages
from django.db import transaction
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from jobs.broker import get_broker
from jobs.conf import settings as jobs_settings
from jobs.models import JobRecord, Message, States, Worker
from jobs.results import EagerResult
from project.demo import jobs as demo_jobs

logger = logging.getLogger(__name__)

#: Session key of the jobs this visitor enqueued, newest last.
SESSION_KEY = "demo_jobs"
#: Jobs shown on the page.
RECENT = 20
BATCH_MAX = 1000
SLOW_SECONDS = 3
TEXT_LIMIT = 80


class BatchForm(forms.Form):
    count = forms.IntegerField(min_value=1, max_value=BATCH_MAX)


# Enqueueing ----------------------------------------------------------------------------------


def _numbers() -> tuple[int, int]:
    return random.randint(1, 100), random.randint(1, 100)


def _enqueue_add(request):
    x, y = _numbers()
    return [(demo_jobs.add.delay(x, y), [x, y])], f"add({x}, {y})"


def _enqueue_batch(request):
    form = BatchForm(request.POST)
    if not form.is_valid():
        raise ValueError(f"a batch holds 1 to {BATCH_MAX} jobs")
    count = form.cleaned_data["count"]
    sent = []
    # One transaction: with the database broker, one commit for the whole batch.
    with transaction.atomic():
        for _ in range(count):
            x, y = _numbers()
            sent.append((demo_jobs.add.delay(x, y), [x, y]))
    return sent, f"{count} add jobs"


def _enqueue_fail(request):
    return [(demo_jobs.fail.delay(), [])], "fail()"


def _enqueue_slow(request):
    x, y = _numbers()
    args = [SLOW_SECONDS, x, y]
    return [(demo_jobs.sleep_then_add.delay(*args), args)], f"sleep_then_add{tuple(args)}"


ACTIONS = {
    "add": _enqueue_add,
    "batch": _enqueue_batch,
    "fail": _enqueue_fail,
    "slow": _enqueue_slow,
}


def _remember(request, sent) -> None:
    """Keep the newest enqueued jobs in the session, to show them before a worker has."""
    now = timezone.now().isoformat()
    entries = request.session.get(SESSION_KEY, [])
    for result, args in sent[-RECENT:]:
        entry = {"id": result.id, "name": result.name, "args": args, "enqueued": now}
        if isinstance(result, EagerResult):  # ran already; nothing was recorded
            entry["state"] = result.state
            entry["result"] = _value_text(result.result)
        entries.append(entry)
    request.session[SESSION_KEY] = entries[-RECENT:]


@require_http_methods(["GET", "POST"])
def index(request):
    if request.method == "POST":
        return _enqueue(request)
    return render(request, "demo/index.html", {
        "jobs": recent_jobs(request),
        "summary": summary(),
        "batch_max": BATCH_MAX,
        "slow_seconds": SLOW_SECONDS,
    })


def _enqueue(request):
    action = ACTIONS.get(request.POST.get("action", ""))
    if action is None:
        messages.error(request, "Unknown action.")
        return redirect("demo:index")
    try:
        sent, label = action(request)
    except Exception as exc:  # a demo shows what went wrong instead of an error page
        logger.warning("Demo could not enqueue: %s", exc, exc_info=True)
        messages.error(request, f"Could not enqueue: {type(exc).__name__}: {exc}")
        return redirect("demo:index")
    _remember(request, sent)
    messages.success(request, f"Enqueued {label}.")
    return redirect("demo:index")


# Showing -------------------------------------------------------------------------------------


@require_GET
def status(request):
    """The recent jobs and what serves them, for the page to refresh itself."""
    return JsonResponse({"jobs": recent_jobs(request), **summary()})


def summary() -> dict:
    eager = bool(jobs_settings.ALWAYS_EAGER)
    return {
        "eager": eager,
        "workers_online": Worker.objects.online().count(),
        # With the database broker, the queue is the Message rows.
        "queued": (Message.objects.count()
                   if get_broker().transactional_enqueue and not eager else None),
    }


def recent_jobs(request) -> list[dict]:
    """The newest jobs: recorded ones, and the visitor's own that no worker recorded yet."""
    entries = request.session.get(SESSION_KEY, [])
    rows = list(JobRecord.objects.order_by("-date_created")[:RECENT])
    known = {row.job_id for row in rows}
    own = [entry["id"] for entry in entries if entry["id"] not in known]
    rows += JobRecord.objects.filter(job_id__in=own)
    known |= {row.job_id for row in rows}
    shown = [_from_row(row) for row in rows]
    shown += [_from_entry(entry) for entry in entries if entry["id"] not in known]
    shown.sort(key=lambda job: job["created"], reverse=True)
    return shown[:RECENT]


def _from_row(row: JobRecord) -> dict:
    return {
        "id": row.job_id,
        "name": row.name.rsplit(".", 1)[-1],
        "state": row.state,
        "args": _call_text(row.args, row.kwargs),
        "result": _result_text(row),
        "runtime": _runtime_text(row.runtime),
        "created": row.date_created,
        "url": reverse("admin:jobs_jobrecord_change", args=[row.pk]),
    }


def _from_entry(entry: dict) -> dict:
    return {
        "id": entry["id"],
        "name": (entry.get("name") or "").rsplit(".", 1)[-1],
        "state": entry.get("state", States.PENDING),
        "args": _call_text(entry.get("args"), None),
        "result": entry.get("result", ""),
        "runtime": "",
        "created": datetime.fromisoformat(entry["enqueued"]),
        "url": "",
    }


def _call_text(args, kwargs) -> str:
    parts = [json.dumps(value, default=str) for value in args or []]
    parts += [f"{key}={json.dumps(value, default=str)}" for key, value in (kwargs or {}).items()]
    return _short(", ".join(parts))


def _result_text(row: JobRecord) -> str:
    if row.state == States.SUCCESS:
        return _value_text(row.result)
    if isinstance(row.result, dict) and "exc_type" in row.result:
        message = " ".join(map(str, row.result.get("exc_message") or []))
        return _short(f"{row.result['exc_type']}: {message}")
    if row.meta is not None:
        return _value_text(row.meta)
    return ""


def _value_text(value) -> str:
    if isinstance(value, BaseException):
        return _short(f"{type(value).__name__}: {value}")
    return _short(json.dumps(value, default=str))


def _runtime_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 0.001:
        return f"{seconds * 1_000_000:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def _short(text: str) -> str:
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT - 1] + "…"
