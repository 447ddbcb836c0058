"""The table, the ratios and the machine, as Markdown: printed, and written to BENCHMARKS.md
between markers so that a run replaces only its own section."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

from bench.measure import Spread

MAIN_COLUMNS = [
    ("enqueue", "enqueue, jobs/s", "{:,.0f}"),
    ("bulk", "bulk enqueue, jobs/s", "{:,.0f}"),
    ("drain", "drain, jobs/s", "{:,.0f}"),
    ("cpu", "worker CPU s / 1k jobs", "{:.2f}"),
    ("rss", "worker peak RSS, MB", "{:,.0f}"),
    ("pss", "worker peak PSS, MB", "{:,.0f}"),
    ("rt_p50", "round trip p50, ms", "{:.1f}"),
    ("rt_p99", "round trip p99, ms", "{:.1f}"),
    ("chord", "chord, s to body", "{:.2f}"),
]
SCALE_COLUMNS = [
    ("depth_shallow", "drain jobs/s, shallow queue", "{:,.0f}"),
    ("depth_deep", "drain jobs/s, deep queue", "{:,.0f}"),
    ("mem_empty", "worker RSS MB, no delayed job", "{:,.0f}"),
    ("mem_loaded", "worker RSS MB, delayed jobs scheduled", "{:,.0f}"),
    ("mem_empty_pss", "PSS MB, no delayed job", "{:,.0f}"),
    ("mem_loaded_pss", "PSS MB, delayed jobs scheduled", "{:,.0f}"),
    ("mem_loaded_peak", "peak RSS MB while receiving them", "{:,.0f}"),
    ("mem_loaded_seconds", "s to receive them", "{:,.0f}"),
]
# (metric, jobs configuration, peer configuration, what is compared, higher is better)
RATIOS = {
    "Celery": [
        ("enqueue", "jobs", "celery-off", "enqueue, one call per job", True),
        ("bulk", "jobs", "celery-off", "bulk enqueue", True),
        ("drain", "jobs-off", "celery-off", "drain, results off", True),
        ("drain", "jobs", "celery-db", "drain, results stored in the database", True),
        ("drain", "jobs-untracked", "celery-db", "drain, results stored, STARTED untracked as "
         "Celery's default", True),
        ("cpu", "jobs-off", "celery-off", "worker CPU per job, results off", False),
        ("cpu", "jobs", "celery-db", "worker CPU per job, results stored", False),
        ("rss", "jobs-off", "celery-off", "worker peak RSS, results off", False),
        ("pss", "jobs-off", "celery-off", "worker peak PSS, results off", False),
        ("mem_loaded", "jobs", "celery-off", "worker RSS with the delayed jobs scheduled", False),
        ("rt_p50", "jobs", "celery-redis", "round trip p50 (Celery: Redis results)", False),
        ("rt_p50", "jobs", "celery-db", "round trip p50 (Celery: django-db results)", False),
        ("chord", "jobs", "celery-redis", "chord, time to body (Celery: Redis results)", False),
    ],
    "Dramatiq": [
        ("enqueue", "jobs", "dramatiq", "enqueue, one call per job", True),
        ("bulk", "jobs", "dramatiq", "bulk enqueue", True),
        ("drain", "jobs-off", "dramatiq", "drain, results off", True),
        ("drain", "jobs", "dramatiq", "drain, jobs storing results", True),
        ("cpu", "jobs-off", "dramatiq", "worker CPU per job, results off", False),
        ("rss", "jobs-off", "dramatiq", "worker peak RSS, results off", False),
        ("pss", "jobs-off", "dramatiq", "worker peak PSS, results off", False),
        ("rt_p50", "jobs", "dramatiq", "round trip p50 (Dramatiq: Redis results)", False),
        ("drain", "jobs-off", "dramatiq-t8", "drain, results off, vs 8 threads per process",
         True),
        ("cpu", "jobs-off", "dramatiq-t8", "worker CPU per job, vs 8 threads per process",
         False),
    ],
    "django-tasks-db": [
        ("enqueue", "jobs", "django-tasks-db", "enqueue, one call per job", True),
        ("bulk", "jobs", "django-tasks-db", "bulk enqueue (django-tasks-db: a loop)", True),
        ("drain", "jobs", "django-tasks-db", "drain, results stored", True),
        ("cpu", "jobs", "django-tasks-db", "worker CPU per job, results stored", False),
        ("pss", "jobs", "django-tasks-db", "worker peak PSS, results stored", False),
        ("rt_p50", "jobs", "django-tasks-db", "round trip p50", False),
    ],
    "Huey": [
        ("enqueue", "jobs", "huey", "enqueue, one call per job", True),
        ("bulk", "jobs", "huey", "bulk enqueue (Huey: a loop)", True),
        ("drain", "jobs", "huey", "drain, results stored", True),
        ("drain", "jobs-untracked", "huey", "drain, results stored, one write per job as "
         "Huey's (`TASK_TRACK_STARTED = False`)", True),
        ("drain", "jobs-off", "huey", "drain, jobs' results off against Huey's stored", True),
        ("cpu", "jobs", "huey", "worker CPU per job, results stored", False),
        ("pss", "jobs", "huey", "worker peak PSS, results stored", False),
        ("rt_p50", "jobs", "huey", "round trip p50", False),
    ],
}
# jobs' enqueue as a share of the raw client's, in the same run:
# (jobs' metric, jobs configuration, the raw client's metric, what)
RAW = [
    ("enqueue", "jobs", "enqueue", "enqueue, one call per job (raw: one command or INSERT per job)"),
    ("enqueue", "jobs-off", "enqueue", "enqueue, results off"),
    ("bulk", "jobs", "bulk", "bulk enqueue, `delay_many` (raw: its batch, many values per "
     "command or INSERT)"),
    ("bulk", "jobs", "bulk_each", "bulk enqueue, `delay_many` (raw: one command per message, "
     "pipelined)"),
]


def cell(values: list[float] | None, fmt: str) -> str:
    spread = Spread.of(values or [])
    if spread is None:
        return "–"
    text = fmt.format(spread.median)
    if spread.count > 1:
        text += f" ({fmt.format(spread.low)}–{fmt.format(spread.high)})"
    return text


def table(columns, rows: list[tuple[str, str, dict]]) -> str:
    lines = ["| peer | results | " + " | ".join(title for _, title, _ in columns) + " |",
             "|---|---|" + "---:|" * len(columns)]
    for label, results, values in rows:
        if not any(values.get(metric) for metric, _, _ in columns):
            continue
        cells = [cell(values.get(metric), fmt) for metric, _, fmt in columns]
        lines.append(f"| {label} | {results} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios(by_key: dict[str, dict]) -> str:
    lines = ["| ratio | compared | jobs | peer | ratio |", "|---|---|---|---|---:|"]
    for peer_name, pairs in RATIOS.items():
        for metric, ours, theirs, what, higher in pairs:
            a, b = by_key.get(ours, {}).get(metric), by_key.get(theirs, {}).get(metric)
            if not a or not b:
                continue
            ma, mb = Spread.of(a).median, Spread.of(b).median
            if not mb:  # below what was measurable (a tiny run's CPU): no ratio to give
                continue
            better = (ma > mb) if higher else (ma < mb)
            lines.append(f"| jobs / {peer_name} | {what} | {ours} | {theirs} | "
                         f"**{ma / mb:.2f}**{'' if better else ' (worse)'} |")
    return "\n".join(lines)


def raw_shares(by_key: dict[str, dict]) -> str:
    """jobs' enqueue rates divided by the raw client's (1.00: as fast as the bare client)."""
    raw = by_key.get("raw", {})
    lines = ["| jobs / raw client | jobs | jobs, jobs/s | raw, jobs/s | share |",
             "|---|---|---:|---:|---:|"]
    for metric, ours, raw_metric, what in RAW:
        a, b = by_key.get(ours, {}).get(metric), raw.get(raw_metric)
        if not a or not b:
            continue
        ma, mb = Spread.of(a).median, Spread.of(b).median
        if not mb:
            continue
        lines.append(f"| {what} | {ours} | {ma:,.0f} | {mb:,.0f} | **{ma / mb:.2f}** |")
    return "\n".join(lines) if len(lines) > 2 else ""


def heading(broker: str, database: str) -> str:
    name = "django://" if broker == "django" else broker
    return f"### Broker: {name}, database: {database}"


def render(bench, peers, sizes, command: str, broker: str, database: str) -> str:
    values = bench.results.values
    rows = [(p.label, p.results, values.get(p.label, {})) for p in peers]
    by_key = {p.key: values.get(p.label, {}) for p in peers}
    measured = {metric for v in values.values() for metric, got in v.items() if got}
    parts = [
        f"Command: `{command}`  ",
        f"Each cell: median of the repetitions (min–max). N = {sizes.n:,} jobs for enqueue and "
        f"drain, {sizes.repeat} repetition(s); round trips: {sizes.roundtrips} sequential "
        "calls per repetition unless noted.",
    ]
    main = table(MAIN_COLUMNS, rows)
    if main.count("\n") > 1:
        parts += ["", main]
    notes = []
    if "bulk" in measured:
        notes.append("Bulk enqueue: " + "; ".join(
            f"{p.label}: `{p.bulk_method}`" for p in peers
            if values.get(p.label, {}).get("bulk")) + ".")
        notes += [f"{p.label}, second bulk figure: `{p.bulk_each_method}`." for p in peers
                  if values.get(p.label, {}).get("bulk_each")]
    notes += [f"{p.label}: N = {p.n:,} ({p.n_note})." for p in peers
              if p.n and p.n < sizes.n and values.get(p.label, {}).get("drain")]
    notes += [f"{p.label}: {p.roundtrips} round trips per repetition ({p.roundtrip_note})."
              for p in peers if p.roundtrips and values.get(p.label, {}).get("rt_p50")]
    if "chord" in measured:
        notes.append(f"Chord: {sizes.chord:,} no-op jobs in the header and a body counting "
                     "their results; seconds from sending it to the body's result, seen by the "
                     "caller.")
    parts += [""] + [f"- {note}" for note in notes] if notes else []
    scale = table(SCALE_COLUMNS, rows)
    if scale.count("\n") > 1:
        parts += ["", f"Scale: the shallow queue holds {sizes.shallow:,} jobs, the deep one "
                  f"{sizes.deep:,} (its rate is timed over windows of {sizes.window:,} jobs "
                  f"while the rest waits); {sizes.delayed:,} delayed jobs are scheduled an "
                  f"hour ahead.", "", scale]
    shares = raw_shares(by_key)
    if shares:
        parts += ["", "jobs' enqueue against the raw client in this run (the share of the "
                  "client's rate that jobs reaches):", "", shares]
    parts += ["", "Ratios from this run (rates: above 1 is jobs ahead; CPU, memory and latency: "
              "below 1 is jobs ahead):", "", ratios(by_key)]
    if bench.results.notes:
        parts += [""] + [f"- {note}" for note in bench.results.notes]
    return "\n".join(parts) + "\n"


def revision() -> str:
    """The commit measured, and whether jobs/ had uncommitted changes (read at the start)."""
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--", "jobs")
    return commit + (" with uncommitted changes in jobs/" if dirty else "")


def machine(env, measured: str | None = None) -> str:
    measured = measured or revision()
    cpu = _first(Path("/proc/cpuinfo"), r"model name\s*:\s*(.+)") or platform.processor()
    mem = _first(Path("/proc/meminfo"), r"MemTotal:\s*(\d+) kB")
    cores = len(re.findall(r"^processor\s*:", Path("/proc/cpuinfo").read_text(), re.M))
    versions = ", ".join(f"{name} {_version(name)}" for name in (
        "Django", "kombu", "redis", "amqp", "psycopg", "celery", "django-celery-results",
        "dramatiq", "pika", "django-tasks", "django-tasks-db", "huey"))
    lines = [
        f"- Machine: {cpu}, {cores} cores, {int(mem) / 2**20:.1f} GiB RAM "
        f"(Linux {platform.release()})" if mem else f"- Machine: {cpu}",
        f"- Python {platform.python_version()}; {versions}",
        f"- Services: {services(env)}",
        f"- Load average (1, 5, 15 min) at the end of the run: {load_average()}; the machine "
        "may be shared with other work, which moves absolute figures more than ratios",
        f"- jobs at commit {measured} (at the start of the run)",
    ]
    return "\n".join(lines)


def load_average() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def services(env) -> str:
    found = []
    try:
        import redis

        info = redis.Redis.from_url(env.redis_url).info("server")
        found.append(f"Redis {info['redis_version']}")
    except Exception:
        pass
    try:
        from django.db import connection

        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SHOW server_version")
                found.append(f"PostgreSQL {cursor.fetchone()[0].split()[0]}")
            else:
                found.append(f"SQLite {connection.Database.sqlite_version}")
    except Exception:
        pass
    if env.broker == "amqp":
        try:
            from kombu import Connection

            with Connection(env.broker_url) as conn:
                props = conn.connection.server_properties
                found.append(f"RabbitMQ {props.get('version')}")
        except Exception:
            pass
    return ", ".join(found)


def write(path: Path, section: str, body: str) -> None:
    """Replace the block between this section's markers in ``path`` (or append it)."""
    begin, end = f"<!-- bench:{section}:begin -->", f"<!-- bench:{section}:end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def _first(path: Path, pattern: str) -> str | None:
    try:
        match = re.search(pattern, path.read_text())
    except OSError:
        return None
    return match.group(1).strip() if match else None


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent.parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
