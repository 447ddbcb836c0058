"""Prometheus metrics (``pip install 'jobs-for-django[prometheus]'``): served by a worker
(``jobs_worker --metrics-port 9808``) and by a view a project mounts (:class:`MetricsView`).

A worker counts what it ran (:class:`WorkerMetrics`, fed by
:class:`jobs.middleware.metrics.Metrics` in its main process): jobs finished by name and
state, their runtimes, retries. Both serve what the database and the broker say at the moment
of the scrape (:class:`StoredState`): messages per queue (ready, reserved, delayed), workers
online, dead letters kept; the view adds the results kept per job name and state.
"""

from __future__ import annotations

from django.db import connections
from django.db.models import Count
from django.http import HttpResponse, HttpResponseForbidden
from django.views import View
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily

from jobs.outcome import Kind

#: The outcomes counted as finished, by the state their rows say.
FINAL = {Kind.SUCCEEDED: "SUCCESS", Kind.FAILED: "FAILURE", Kind.REVOKED: "REVOKED"}


class WorkerMetrics:
    """One worker's counters, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.finished = Counter("jobs_finished", "Jobs run to a final state by this worker.",
                                ["job", "state"], registry=self.registry)
        self.retries = Counter("jobs_retries", "Attempts of jobs that will run again.",
                               ["job"], registry=self.registry)
        self.runtime = Histogram("jobs_runtime_seconds", "Time jobs spent running.", ["job"],
                                 registry=self.registry)
        self.registry.register(StoredState(close_after=True))

    def count(self, outcome) -> None:
        state = FINAL.get(outcome.kind)
        if state is not None:
            self.finished.labels(outcome.name, state).inc()
            if outcome.runtime and outcome.kind is not Kind.REVOKED:
                self.runtime.labels(outcome.name).observe(outcome.runtime)
        elif outcome.kind is Kind.RETRIED:
            self.retries.labels(outcome.name).inc()


def serve(port: int, address: str = "0.0.0.0") -> WorkerMetrics:
    """Count this worker's jobs and serve them, with the stored state, on ``port``."""
    from jobs.middleware import metrics as middleware

    middleware.recorder = made = WorkerMetrics()
    start_http_server(port, addr=address, registry=made.registry)
    return made


class StoredState:
    """Gauges read at each scrape from the database and the broker."""

    def __init__(self, close_after: bool = False, results: bool = False) -> None:
        self.close_after = close_after  # a thread of the worker's HTTP server: close its connection
        self.results = results

    def collect(self):
        try:
            yield from self._gauges()
        finally:
            if self.close_after:
                connections.close_all()

    def _gauges(self):
        from jobs.broker import get_broker
        from jobs.conf import settings
        from jobs.models import DeadLetter, JobRecord, Worker

        online = list(Worker.objects.online().values_list("queues", flat=True))
        yield GaugeMetricFamily("jobs_workers_online", "Workers whose heartbeat is recent.",
                                value=len(online))
        yield GaugeMetricFamily("jobs_dead_letters", "Messages kept as dead letters.",
                                value=DeadLetter.objects.count())
        names = {settings.TASK_DEFAULT_QUEUE}
        for queues in online:
            names.update(map(str, queues if isinstance(queues, list) else []))
        depths = GaugeMetricFamily("jobs_queue_messages", "Messages per queue: ready to be "
                                   "taken, reserved by a worker, delayed until due.",
                                   labels=["queue", "state"])
        for row in get_broker().queue_depths(names)["rows"]:
            for state in ("ready", "reserved", "delayed"):
                if row[state] is not None:
                    depths.add_metric([row["name"], state], row[state])
        yield depths
        if self.results:
            kept = GaugeMetricFamily("jobs_results", "Job results kept, by job and state.",
                                     labels=["job", "state"])
            for row in JobRecord.objects.values("name", "state").annotate(n=Count("id")):
                kept.add_metric([row["name"], row["state"]], row["n"])
            yield kept


class MetricsView(View):
    """The metrics of the database and the broker, for a project to mount::

        path("metrics/", MetricsView.as_view()),

    Only users with ``permission`` (``jobs.view_jobrecord``) see them; pass
    ``MetricsView.as_view(permission=None)`` to serve them to anyone who can reach the URL.
    """

    permission: str | None = "jobs.view_jobrecord"

    def get(self, request):
        if self.permission and not request.user.has_perm(self.permission):
            return HttpResponseForbidden("The metrics need the permission " + self.permission)
        registry = CollectorRegistry()
        registry.register(StoredState(results=True))
        return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
