"""Job statistics over the last hour, for the dashboard: jobs per minute, p50/p95 runtimes per
job name, failures, and the jobs running now.

Each is a bounded read, so that it stays fast however many results the table holds. Counts
come from one aggregate over the ``date_done`` range (the ``(state, date_done)`` index), and a
minute's counts are kept in Django's cache once the minute is over, so that a dashboard polling
every few seconds reads only the newest minute's rows. Runtimes come from the latest runs of
each job name (the ``(name, date_created)`` index); running jobs from the ``state`` index.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from django.core.cache import cache
from django.db import connections, router
from django.db.models import BooleanField, Count, ExpressionWrapper, Q
from django.db.models.functions import TruncMinute

from jobs.display import format_runtime, format_time, progress
from jobs.models import JobRecord, States

#: Minutes of history in the chart and the job statistics.
WINDOW_MINUTES = 60
#: Latest runs of each job name that its p50/p95 runtimes are computed from.
RUNTIME_SAMPLE = 500
#: How long before the window a run may have been created (been delayed, waited in a queue)
#: to count among the runtimes of the window.
CREATED_BEFORE = timedelta(hours=1)
#: Job names looked at for runtimes (the busiest of the window).
MAX_NAMES = 100
#: Rows shown in the tables of running, slowest and most-failing jobs.
SHOWN = 10
#: Seconds after a minute's end from which its counts are final: a job finishing in its last
#: moment is committed by then.
SETTLE = timedelta(seconds=10)
CACHE_PREFIX = "jobs:stats:minute:"

FINISHED = (States.SUCCESS, States.FAILURE)
SERIES = ("succeeded", "failed", "retried")


def window_start(now: datetime) -> datetime:
    """The first minute of the window; the last one is the current, partial minute."""
    return now.replace(second=0, microsecond=0) - timedelta(minutes=WINDOW_MINUTES - 1)


# Jobs per minute ---------------------------------------------------------------------------


def throughput(now: datetime) -> tuple[dict, dict]:
    """Jobs per minute over the window, and per job name: runs and failures.

    *Succeeded* and *failed* count the jobs that finished in each minute. *Retried* counts
    the jobs that finished after at least one retry, in the minute they finished, and the
    jobs waiting for a retry now, in the minute their last attempt started: a result row
    keeps only a job's latest attempt, so earlier attempts can't be counted one by one.
    """
    start = window_start(now)
    minutes = [start + timedelta(minutes=i) for i in range(WINDOW_MINUTES)]
    counts = minute_counts(minutes, now)
    series = {key: [counts[minute][key] for minute in minutes] for key in SERIES}
    names: dict[str, dict] = defaultdict(lambda: {"runs": 0, "failed": 0})
    for minute in minutes:
        for name, (runs, failed) in counts[minute]["names"].items():
            names[name]["runs"] += runs
            names[name]["failed"] += failed
    for minute, waiting in _waiting_for_retry(start):
        index = _index(minute, start)
        if index is not None:
            series["retried"][index] += waiting
    return {"start": start.isoformat(), **series}, dict(names)


def minute_counts(minutes: list[datetime], now: datetime) -> dict[datetime, dict]:
    """Counts of each minute: finished minutes from the cache, the rest from the table."""
    settled = [minute for minute in minutes if minute + timedelta(minutes=1) + SETTLE <= now]
    cached = _cache_get({_key(minute): minute for minute in settled})
    missing = [minute for minute in minutes if minute not in cached]
    fresh = _count_since(missing[0]) if missing else {}
    counts = {**cached, **{minute: fresh.get(minute) or _empty() for minute in missing}}
    _cache_set({_key(minute): counts[minute] for minute in settled if minute not in cached})
    return counts


def _count_since(since: datetime) -> dict[datetime, dict]:
    rows = (
        JobRecord.objects.filter(state__in=FINISHED, date_done__gte=since)
        .annotate(minute=TruncMinute("date_done"))
        .values_list("minute", "name", "state")
        .annotate(runs=Count("id"), retried=Count("id", filter=Q(retries__gt=0)))
        .order_by()
    )
    counts: dict[datetime, dict] = defaultdict(_empty)
    for minute, name, state, runs, retried in rows:
        entry = counts[minute.astimezone(UTC)]
        failed = runs if state == States.FAILURE else 0
        entry["failed"] += failed
        entry["succeeded"] += runs - failed
        entry["retried"] += retried
        total, failures = entry["names"].get(name, (0, 0))
        entry["names"][name] = (total + runs, failures + failed)
    return counts


def _waiting_for_retry(since: datetime):
    return (
        JobRecord.objects.filter(state=States.RETRY, date_started__gte=since)
        .annotate(minute=TruncMinute("date_started"))
        .values_list("minute")
        .annotate(n=Count("id"))
        .order_by()
    )


def _empty() -> dict:
    return {"succeeded": 0, "failed": 0, "retried": 0, "names": {}}


def _index(minute: datetime | None, start: datetime) -> int | None:
    if minute is None:
        return None
    index = int((minute - start).total_seconds() // 60)
    return index if 0 <= index < WINDOW_MINUTES else None


def _key(minute: datetime) -> str:
    # Named after the database too: projects may share one cache server.
    name = str(connections[router.db_for_read(JobRecord)].settings_dict["NAME"])
    database = hashlib.sha1(name.encode()).hexdigest()[:10]
    return f"{CACHE_PREFIX}{database}:{minute.astimezone(UTC):%Y%m%d%H%M}"


def _cache_get(keys: dict[str, datetime]) -> dict[datetime, dict]:
    if not keys:
        return {}
    try:
        found = cache.get_many(list(keys))
    except Exception:  # a cache that is down costs a longer query, nothing more
        return {}
    return {keys[key]: value for key, value in found.items()}


def _cache_set(values: dict[str, dict]) -> None:
    if not values:
        return
    try:
        cache.set_many(values, timeout=(WINDOW_MINUTES + 5) * 60)
    except Exception:
        pass


# Runtimes and failures per job name -------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float | None:
    """The ``fraction`` quantile of sorted ``values``, interpolating between neighbours."""
    if not values:
        return None
    position = (len(values) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    return values[low] + (values[high] - values[low]) * (position - low)


def recent_runtimes(name: str, since: datetime) -> list[float]:
    """Runtimes of the latest runs of ``name`` that finished since ``since``, sorted.

    Reads at most :data:`RUNTIME_SAMPLE` rows, newest first along the (name, date_created)
    index, among the runs created at most :data:`CREATED_BEFORE` before ``since``. (The
    finish time is checked here: in the query, it leads PostgreSQL away from that index.)
    """
    runs = (
        JobRecord.objects.filter(name=name, date_created__gte=since - CREATED_BEFORE,
                                 runtime__isnull=False)
        .annotate(in_window=ExpressionWrapper(Q(date_done__gte=since),
                                              output_field=BooleanField()))
        .order_by("-date_created")
        .values_list("runtime", "in_window")[:RUNTIME_SAMPLE]
    )
    return sorted(runtime for runtime, in_window in runs if in_window)


def job_statistics(names: dict[str, dict], since: datetime) -> tuple[list, list]:
    """The slowest job names (by p95 runtime) and the most failing ones."""
    busiest = sorted(names, key=lambda name: -names[name]["runs"])[:MAX_NAMES]
    slowest = []
    for name in busiest:
        runtimes = recent_runtimes(name, since)
        if runtimes:
            slowest.append({"name": name, "runs": names[name]["runs"],
                            "p50": percentile(runtimes, 0.5), "p95": percentile(runtimes, 0.95),
                            "max": runtimes[-1], "sample": len(runtimes)})
    slowest.sort(key=lambda row: -row["p95"])
    for row in slowest:
        for key in ("p50", "p95", "max"):
            row[f"{key}_text"] = format_runtime(row[key])
    failing = [{"name": name, "runs": counts["runs"], "failed": counts["failed"],
                "rate": round(100 * counts["failed"] / counts["runs"], 1)}
               for name, counts in names.items() if counts["failed"]]
    failing.sort(key=lambda row: (-row["failed"], -row["rate"], row["name"]))
    return slowest[:SHOWN], failing[:SHOWN]


# Running jobs -------------------------------------------------------------------------------


def running_jobs(now: datetime) -> tuple[list[dict], int]:
    """The longest-running jobs now, with their runtime so far, and how many run in all."""
    running = JobRecord.objects.running()
    rows = (running.order_by("date_started")
            .values("pk", "job_id", "name", "worker", "queue", "state", "meta",
                    "date_started")[:SHOWN])
    jobs = []
    for row in rows:
        started = row.pop("date_started")
        runtime = (now - started).total_seconds() if started else None
        jobs.append({**row, "started": format_time(started), "runtime": runtime,
                     "runtime_text": format_runtime(runtime), "progress": progress(row.pop("meta"))})
    total = len(jobs) if len(jobs) < SHOWN else running.count()
    return jobs, total
