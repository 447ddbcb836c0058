"""A database outage in the middle of a run, on every broker at once (django://, Redis and
RabbitMQ, each with its results in PostgreSQL): a restart, and a 30 s stop.

Every job ends SUCCESS with its side effect; while the database is away the workers run
nothing, hold or hand back their messages and use next to no CPU; they resume by
themselves once it is back, and say so once each way. The scheduler (``jobs_beat``, and
``jobs_worker --beat``) sends each due run once.

Each test restarts or stops a PostgreSQL server of its own (a cluster made for it, which
the test process and its workers use as their database), never the one the other tests
share: they run beside them, in the PostgreSQL session (``DATABASE_URL=postgres://... pytest
-m pg``).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import psutil
import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.utils import timezone

from jobs.admin import dashboard
from jobs.models import JobRecord, States
from jobs_beat.models import PeriodicTask
from tests.conftest import (
    AMQP_URL,
    BROKERS,
    SESSION,
    PostgresCluster,
    purge,
    require,
    use_broker,
    wait_for,
)
from tests.factories import every
from tests.jobs_app import jobs as testjobs
from tests.test_chaos import report

pytestmark = [pytest.mark.pg, pytest.mark.e2e, pytest.mark.long]

N = 400  # jobs per broker
JOB_SECONDS = 0.05
STARTED_BEFORE_OUTAGE = 60  # jobs done on every broker before the database goes away
OUTAGE = 30.0  # seconds the server stays stopped
#: CPU seconds a worker (its main process and children) may use over the whole stop: the
#: noticing and handing back, then a probe a second. A worker polling or requeueing in a
#: loop uses several seconds.
CPU_BUDGET = 1.5
#: The least outage a worker's row may show after the 30 s stop: it notices the stop a
#: moment after it happens, and its probe sees the server back within a second or so.
OUTAGE_SHOWN = OUTAGE - 5
DELAYED = 20  # jobs per broker with a countdown that ends during the outage
DELAY = 8  # seconds: the outage begins some 3 s after they are sent

#: The django:// broker's queue here. Its messages are rows of the table where the workers
#: on Redis and RabbitMQ park delayed jobs, and they release the due rows of their own queues
#: (``default`` and ``other``) to their brokers: not this one.
DATABASE_QUEUE = "outage-db"

DOWN_TEXT = "Database unreachable"
BACK_TEXT = "Database back"


# The server --------------------------------------------------------------------------------


def accepts_connections() -> bool:
    import psycopg

    conf = connection.settings_dict
    try:
        psycopg.connect(host=conf["HOST"], port=conf["PORT"], user=conf["USER"] or None,
                        dbname=conf["NAME"], connect_timeout=2).close()
        return True
    except psycopg.Error:
        return False


def restore_server(server: PostgresCluster) -> datetime:
    """Start the server if it is stopped and wait until it takes connections; returns when."""
    if not server.running:
        server.ctl("start")
    wait_for(accepts_connections, timeout=60, interval=0.1,
             message="PostgreSQL did not come back")
    connections.close_all()  # this process's connection died with the server
    return timezone.now()


@contextmanager
def server_stopped(server: PostgresCluster):
    """Stop the server for the ``with`` block; it is started again however the block ends.
    Yields a dict that receives ``back``: when the server took connections again."""
    when: dict = {}
    server.ctl("stop")
    try:
        yield when
    finally:
        when["back"] = restore_server(server)


@pytest.fixture
def server(transactional_db, request):
    """The test's database on a server of its own, migrated: this process's connection and
    every worker it starts (:func:`tests.conftest.database_url`) use it until the test ends."""
    import psycopg

    if connection.vendor != "postgresql":
        pytest.skip("restarts a PostgreSQL server: run with DATABASE_URL=postgres://...")
    own_postgres = request.getfixturevalue("own_postgres")
    conf = connection.settings_dict
    saved = dict(conf)
    with psycopg.connect(host="127.0.0.1", port=own_postgres.port, user="postgres",
                         dbname="postgres", autocommit=True) as admin:
        admin.execute("CREATE DATABASE jobs_outage")
    connections.close_all()
    conf.update(HOST="127.0.0.1", PORT=str(own_postgres.port), USER="postgres", PASSWORD="",
                NAME="jobs_outage")
    try:
        call_command("migrate", verbosity=0)
        yield own_postgres
    finally:
        connections.close_all()
        conf.clear()
        conf.update(saved)


# Brokers, workers, side effects ----------------------------------------------------------


@pytest.fixture
def brokers(settings, server, request):
    """The three brokers, clean, for workers that all record into the test's own PostgreSQL
    database."""
    require("redis")
    require("rabbitmq")
    request.getfixturevalue("_amqp_vhost")
    urls = dict(BROKERS)
    assert urls["amqp"] == AMQP_URL + SESSION
    for url in urls.values():
        purge(url)
    yield urls
    restore_server(server)
    for url in urls.values():
        purge(url)


def queues(name: str) -> list[str]:
    return ["-Q", DATABASE_QUEUE] if name == "django" else []


def enqueue(settings, name: str, url: str, directory: Path, n: int = N, **options) -> list:
    """``n`` jobs leaving their marks in ``directory``, sent to broker ``name``."""
    use_broker(settings, url)
    directory.mkdir()
    if name == "django":
        options["queue"] = DATABASE_QUEUE
    return testjobs.leave_mark.delay_many([(str(directory), i, JOB_SECONDS) for i in range(n)],
                                          **options)


def start_workers(start_worker, brokers: dict, beat: str = "") -> dict:
    """One worker per broker (``-c 2``), started together; ``beat``: the broker whose
    worker also runs the scheduler."""
    workers = {name: start_worker(url, "-c", "2", "-n", f"{name}@outage", *queues(name),
                                  *(["--beat"] if name == beat else []), ready=False)
               for name, url in brokers.items()}
    for worker in workers.values():
        worker.wait_ready()
    return workers


def runs(directory: Path) -> int:
    """How many times jobs ran in ``directory`` (a line per run), read without the
    database."""
    return sum(len(path.read_text().splitlines()) for path in directory.iterdir())


def succeeded(handles) -> int:
    return JobRecord.objects.filter(job_id__in=[h.id for h in handles], state=States.SUCCESS).count()


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its children, the ones that ended included."""
    main = psutil.Process(pid)
    times = main.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in main.children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def ran_more_than_once(directory: Path) -> int:
    return sum(1 for path in directory.iterdir() if len(path.read_text().splitlines()) > 1)


def check_every_job_succeeded_once_recorded(name: str, handles, directory: Path) -> None:
    n = len(handles)
    rows = {r.job_id: r for r in JobRecord.objects.filter(job_id__in=[h.id for h in handles])}
    states = [rows[h.id].state if h.id in rows else "no row" for h in handles]
    assert states == [States.SUCCESS] * n, (name, [s for s in states if s != States.SUCCESS][:10])
    assert [rows[h.id].result for h in handles] == list(range(n)), name
    missing = [i for i in range(n) if not (directory / str(i)).exists()]
    assert not missing, f"{name}: jobs recorded SUCCESS without their side effect: {missing[:10]}"


def check_said_once_each_way(name: str, output: str, at_most: bool = False) -> None:
    """The process said once that the database was unreachable and once that it was back
    (``at_most``: or neither: a restart can be over before a process looks), and logged no
    traceback."""
    said = (output.count(DOWN_TEXT), output.count(BACK_TEXT))
    assert said in ([(0, 0), (1, 1)] if at_most else [(1, 1)]), \
        f"{name} said {DOWN_TEXT!r} {said[0]} times and {BACK_TEXT!r} {said[1]} times"
    assert "Traceback" not in output, f"{name} logged a traceback"


# The scheduler -----------------------------------------------------------------------------


def schedule_every_second(directory: Path) -> PeriodicTask:
    directory.mkdir()
    return PeriodicTask.objects.create(name=f"note-due-{directory.parent.name}",
                                       task="tests.jobs_app.jobs.note_due_time",
                                       args=[str(directory)], interval=every(1))


def sent_runs(directory: Path) -> dict[datetime, set[str]]:
    """Due time -> the ids of the jobs sent for it (read from what the jobs wrote)."""
    return {datetime.fromisoformat(path.name): set(path.read_text().split())
            for path in directory.iterdir() if path.name != "unscheduled"}


def check_each_due_time_sent_once_and_resumed(directory: Path, back: datetime) -> None:
    wait_for(lambda: len([due for due in sent_runs(directory) if due > back]) >= 3, timeout=30,
             interval=0.2, message="the scheduler did not resume sending after the outage")
    sent = sent_runs(directory)
    twice = {due: ids for due, ids in sent.items() if len(ids) > 1}
    assert not twice, f"due times sent more than once: {twice}"
    after = sorted(due for due in sent if due > back)
    steps = {(b - a).total_seconds() for a, b in zip(after, after[1:], strict=False)}
    assert steps == {1.0}, f"due times after the outage are not every second: {after}"


# The tests ---------------------------------------------------------------------------------


def test_a_postgresql_restart_mid_run_loses_no_job_on_any_broker(
        server, brokers, settings, start_worker, start_beat, tmp_path):
    dues = tmp_path / "dues"
    schedule_every_second(dues)
    workers = start_workers(start_worker, brokers)
    beat = start_beat("--no-sync", broker_url=brokers["redis"])
    marks = {name: tmp_path / name for name in brokers}
    handles = {name: enqueue(settings, name, url, marks[name])
               for name, url in brokers.items()}
    wait_for(lambda: all(runs(d) >= STARTED_BEFORE_OUTAGE for d in marks.values()),
             timeout=60, interval=0.05, message="the jobs did not start")

    try:
        server.ctl("restart")
    finally:
        back = restore_server(server)

    for name, jobs in handles.items():
        wait_for(lambda: succeeded(jobs) == N, timeout=60, interval=0.25,  # noqa: B023
                 message=f"{name}: {succeeded(jobs)} of {N} jobs succeeded after the restart")
    for name, jobs in handles.items():
        check_every_job_succeeded_once_recorded(name, jobs, marks[name])
    check_each_due_time_sent_once_and_resumed(dues, back)
    for name in brokers:
        report(test="database restart", broker=name, jobs=N, lost=0,
               ran_more_than_once=ran_more_than_once(marks[name]))
    for name, worker in workers.items():
        check_said_once_each_way(name, worker.output, at_most=True)
    check_said_once_each_way("jobs_beat", beat.output, at_most=True)


def test_a_thirty_second_stop_pauses_every_worker_at_a_trickle_of_cpu(
        server, brokers, settings, start_worker, tmp_path):
    dues = tmp_path / "dues"
    schedule_every_second(dues)
    workers = start_workers(start_worker, brokers, beat="redis")
    # First in their queues: parked in the database (Redis, RabbitMQ) before the outage,
    # due during it, run after it.
    later = {name: tmp_path / f"{name}-delayed" for name in brokers}
    delayed = {name: enqueue(settings, name, url, later[name], n=DELAYED, countdown=DELAY)
               for name, url in brokers.items()}
    marks = {name: tmp_path / name for name in brokers}
    handles = {name: enqueue(settings, name, url, marks[name])
               for name, url in brokers.items()}
    wait_for(lambda: all(runs(d) >= STARTED_BEFORE_OUTAGE for d in marks.values()),
             timeout=60, interval=0.05, message="the jobs did not start")

    with server_stopped(server) as outage:
        began = time.monotonic()
        cpu_before = {name: cpu_seconds(w.process.pid) for name, w in workers.items()}
        wait_for(lambda: all(DOWN_TEXT in w.output for w in workers.values()), timeout=15,
                 interval=0.1, message="not every worker noticed that the database is down")
        ran = {name: runs(d) for name, d in marks.items()}
        wait_for(lambda: time.monotonic() - began >= OUTAGE, timeout=OUTAGE + 1, interval=0.5)
        cpu = {name: cpu_seconds(w.process.pid) - cpu_before[name] for name, w in workers.items()}
        ran_meanwhile = {name: runs(d) - ran[name] for name, d in marks.items()}
        alive = {name: w.process.poll() is None for name, w in workers.items()}

    for name in brokers:
        report(test="database stop", broker=name, outage_seconds=OUTAGE,
               worker_cpu_seconds=round(cpu[name], 3), ran_while_down=ran_meanwhile[name])
    assert alive == dict.fromkeys(brokers, True)
    assert ran_meanwhile == dict.fromkeys(brokers, 0), "jobs ran while the database was down"
    assert all(seconds < CPU_BUDGET for seconds in cpu.values()), \
        f"CPU seconds used over a {OUTAGE:.0f} s outage: {cpu}"
    wait_for(lambda: all(BACK_TEXT in w.output for w in workers.values()), timeout=10,
             interval=0.1, message="not every worker saw the database come back within 10 s")
    for name, jobs in handles.items():
        wait_for(lambda: succeeded(jobs) == N, timeout=60, interval=0.25,  # noqa: B023
                 message=f"{name}: {succeeded(jobs)} of {N} jobs succeeded after the outage")
        wait_for(lambda: succeeded(delayed[name]) == DELAYED, timeout=20,  # noqa: B023
                 interval=0.25, message=f"{name}: the delayed jobs did not all succeed")
    for name, jobs in handles.items():
        check_every_job_succeeded_once_recorded(name, jobs, marks[name])
        check_every_job_succeeded_once_recorded(name, delayed[name], later[name])
    check_each_due_time_sent_once_and_resumed(dues, outage["back"])
    for name in brokers:
        report(test="database stop", broker=name, jobs=N, lost=0,
               ran_more_than_once=ran_more_than_once(marks[name]))
    for name, worker in workers.items():
        check_said_once_each_way(name, worker.output)
    shown = wait_for(lambda: dashboard_waits(brokers), timeout=5, interval=0.2,
                     message="the dashboard does not show every worker's wait")
    assert all(seconds >= OUTAGE_SHOWN for seconds in shown.values()), shown


def dashboard_waits(brokers) -> dict | None:
    """Seconds each worker says, on the dashboard, that it waited for its database."""
    waits = {w["hostname"]: w["database_wait"] for w in dashboard.snapshot()["workers"]}
    waits = {name: waits.get(f"{name}@outage") for name in brokers}
    return None if None in waits.values() else {k: v["seconds"] for k, v in waits.items()}
