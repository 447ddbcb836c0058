"""The monitoring dashboard: what workers, queues and jobs are doing, in one small document.

:func:`snapshot` gathers it: job statistics from :mod:`jobs.admin.stats` (bounded queries, fast
however many results the table holds), workers from their heartbeat rows, and queue depths
from the broker, time-bound: a broker that is down shows as unavailable and never holds up
the page. The admin serves it as a page and as JSON that the page polls
(:class:`DashboardViews`).
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.generic import RedirectView

from jobs import broker
from jobs.admin import stats
from jobs.admin.filters import StateFilter
from jobs.admin.operations import pause_queue, resume_queue
from jobs.display import format_runtime, format_time
from jobs.models import DeadLetter, States, Worker

logger = logging.getLogger("jobs.dashboard")

#: Workers shown (the dashboard of a fleet lists the first ones by name).
MAX_WORKERS = 100


# Workers and queues ----------------------------------------------------------------------


def online_workers(now: datetime) -> list[Worker]:
    return list(Worker.objects.online(now).order_by("hostname", "pid")[:MAX_WORKERS])


def worker_row(worker: Worker, now: datetime) -> dict:
    queues = worker.queues if isinstance(worker.queues, list) else [worker.queues]
    return {
        "pk": worker.pk, "hostname": worker.hostname, "pid": worker.pid,
        "queues": [str(queue) for queue in queues], "pool": worker.pool,
        "concurrency": worker.concurrency, "active": worker.active,
        "load": round(100 * worker.active / worker.concurrency) if worker.concurrency else None,
        "processed": worker.processed, "last_seen": format_time(worker.last_seen),
        "seen_ago": round(max(0.0, (now - worker.last_seen).total_seconds()), 1),
        "stopping": worker.stop_requested_at is not None,
        "database_wait": database_wait(worker, now),
    }


def database_wait(worker: Worker, now: datetime) -> dict | None:
    """The worker's latest wait for its database, if it ended within the dashboard's window.
    While its database is unreachable a worker can't write its row (its heartbeat just
    stops): it writes the wait once the database is back."""
    back = worker.database_back_at
    if worker.database_wait is None or back < stats.window_start(now):
        return None
    return {"seconds": round(worker.database_wait, 1), "text": format_runtime(worker.database_wait),
            "since": format_time(worker.database_lost_at), "until": format_time(back)}


def known_queues(workers: list[Worker]) -> set[str]:
    """Queues worth showing even when empty: the default, routed ones, and workers' queues."""
    names = broker.get_broker().known_queues()
    for worker in workers:
        names.update(map(str, worker.queues if isinstance(worker.queues, list) else []))
    return names


def count_consumers(rows: list[dict], workers: list[Worker]) -> None:
    """How many of ``workers`` consume from each queue: 0 once it is paused everywhere."""
    for row in rows:
        row["consumers"] = sum(row["name"] in (w.queues if isinstance(w.queues, list) else ())
                               for w in workers)


def queue_depths(names: set[str]) -> dict:
    """Messages per queue: *ready* to be taken, *reserved* by a worker, *delayed* until due
    (None where the broker doesn't say), time-bound (:meth:`jobs.broker.Broker.queue_depths`)."""
    return broker.get_broker().queue_depths(names)


# The whole -------------------------------------------------------------------------------


def snapshot(now: datetime | None = None, *, workers: bool = True,
             dead_letters: bool = True) -> dict:
    """Everything the dashboard shows, as JSON-ready data.

    ``workers`` and ``dead_letters`` leave out what the viewer may not see.
    """
    now = now or timezone.now()
    series, names = stats.throughput(now)
    slowest, failing = stats.job_statistics(names, stats.window_start(now))
    running, running_total = stats.running_jobs(now)
    online = online_workers(now)
    queues = queue_depths(known_queues(online))
    if workers:
        count_consumers(queues["rows"], online)
    totals = {
        "succeeded": sum(series["succeeded"]), "failed": sum(series["failed"]),
        "retried": sum(series["retried"]), "running": running_total,
        "queued": sum(row["ready"] or 0 for row in queues["rows"]),
        "delayed": sum(row["delayed"] or 0 for row in queues["rows"]),
        "workers": len(online) if workers else None,
        "dead_letters": DeadLetter.objects.count() if dead_letters else None,
    }
    return {
        "now": format_time(now), "window_minutes": stats.WINDOW_MINUTES,
        "broker": broker.get_broker().display_url,
        "totals": totals, "throughput": series,
        "workers": [worker_row(worker, now) for worker in online] if workers else None,
        "queues": queues, "running": running, "slowest": slowest, "failing": failing,
    }


# In the admin ----------------------------------------------------------------------------


class DashboardViews:
    """Mixed into the job results' ModelAdmin: ``dashboard/`` and ``dashboard.json``.

    Both need the view permission on job results; the workers and dead letters parts show
    only to users who may view those.
    """

    dashboard_template = "admin/jobs/dashboard.html"
    #: Milliseconds between the page's polls of the JSON document.
    dashboard_refresh = 3000

    def dashboard_urls(self) -> list:
        view = self.admin_site.admin_view
        return [
            path("dashboard/", view(self.dashboard_view), name="jobs_jobrecord_dashboard"),
            path("dashboard.json", view(self.dashboard_data_view),
                 name="jobs_jobrecord_dashboard_data"),
            path("dashboard/queues/<str:action>/<path:queue>", view(self.queue_control_view),
                 name="jobs_jobrecord_queue_control"),
        ]

    def dashboard_snapshot(self, request) -> dict:
        if not self.has_view_permission(request):
            raise PermissionDenied
        user = request.user
        data = snapshot(workers=user.has_perm("jobs.view_worker"),
                        dead_letters=user.has_perm("jobs.view_deadletter"))
        self._add_links(data, request)
        return data

    def dashboard_view(self, request):
        data = self.dashboard_snapshot(request)
        context = {
            **self.admin_site.each_context(request),
            "title": "Jobs dashboard",
            "opts": self.model._meta,
            "app_label": self.model._meta.app_label,
            "snapshot": data,
            "data_url": reverse(f"{self.admin_site.name}:jobs_jobrecord_dashboard_data"),
            "refresh": self.dashboard_refresh,
        }
        return TemplateResponse(request, self.dashboard_template, context)

    def dashboard_data_view(self, request):
        return JsonResponse(self.dashboard_snapshot(request))

    def queue_control_view(self, request, action, queue):
        """POST: pause or resume ``queue`` on every live worker (``jobs.change_worker``)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm("jobs.change_worker"):
            raise PermissionDenied
        control = {"pause": pause_queue, "resume": resume_queue}.get(action)
        if control is None:
            raise Http404
        answers = control(queue)
        if answers:
            text = "; ".join(f"{host}: {reply.get('ok') or reply.get('error')}"
                             for host, reply in sorted(answers.items()))
            messages.success(request, f"{action.capitalize()} {queue}: {text}")
        else:
            messages.warning(request, f"{action.capitalize()} {queue}: no worker answered.")
        return HttpResponseRedirect(reverse(f"{self.admin_site.name}:jobs_jobrecord_dashboard"))

    def _add_links(self, data: dict, request) -> None:
        """URLs of the pages behind the numbers, for those the user may open."""
        site, user = self.admin_site.name, request.user
        results = reverse(f"{site}:jobs_jobrecord_changelist")
        for job in data["running"]:
            job["url"] = reverse(f"{site}:jobs_jobrecord_change", args=[job.pop("pk")])
        for row in data["slowest"] + data["failing"]:
            row["url"] = f"{results}?{urlencode({'name': row['name']})}"
        for worker in data["workers"] or ():
            worker["url"] = reverse(f"{site}:jobs_worker_change", args=[worker.pop("pk")])
        if user.has_perm("jobs.change_worker"):
            for queue in data["queues"]["rows"]:
                for action in ("pause", "resume"):
                    queue[f"{action}_url"] = reverse(f"{site}:jobs_jobrecord_queue_control",
                                                     args=[action, queue["name"]])
        since = timezone.localtime(stats.window_start(timezone.now())).strftime("%Y-%m-%dT%H:%M")

        def finished(**params) -> str:
            return f"{results}?{urlencode({**params, 'date_done__gte': since})}"

        messages = reverse(f"{site}:jobs_message_changelist")
        data["links"] = {
            "succeeded": finished(state=States.SUCCESS),
            "failed": finished(state=States.FAILURE),
            "retried": finished(retries__gt=0),
            "running": f"{results}?{urlencode({'state': StateFilter.RUNNING})}",
            "workers": f"{reverse(f'{site}:jobs_worker_changelist')}?online=yes"
                       if user.has_perm("jobs.view_worker") else None,
            "queued": messages if user.has_perm("jobs.view_message") else None,
            "delayed": f"{messages}?status=delayed" if user.has_perm("jobs.view_message")
                       else None,
            "dead_letters": reverse(f"{site}:jobs_deadletter_changelist")
                            if user.has_perm("jobs.view_deadletter") else None,
        }


def moved_dashboard_urls(site) -> list:
    """The dashboard's address before the model was renamed JobRecord, answered with a
    permanent redirect so that bookmarks keep working. It lies outside the model admin's own
    URLs (``jobs/jobrecord/``), so it belongs to the site's."""
    redirect = RedirectView.as_view(pattern_name=f"{site.name}:jobs_jobrecord_dashboard",
                                    permanent=True, query_string=True)
    return [path("jobs/jobresult/dashboard/", redirect)]
