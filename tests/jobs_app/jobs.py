"""Jobs the tests run (and the worker processes they start), besides the demo's
(project/demo/jobs.py): each shows one behaviour of a job or a worker. Their names are
``tests.jobs_app.jobs.<function>``."""

import asyncio
import json
import os
import time
import zlib

from jobs import job


@job(track_started=False)
def add_untracked(x, y):
    """The demo's ``add``, its row written once, when it is done (Celery's default)."""
    return x + y


@job(bind=True)
def whoami(self):
    return {"id": self.request.id, "retries": self.request.retries, "pid": os.getpid(),
            "hostname": self.request.hostname}


@job(bind=True, max_retries=3, default_retry_delay=0)
def flaky(self, succeed_on):
    """Fails until its ``succeed_on``-th try."""
    if self.request.retries + 1 < succeed_on:
        raise self.retry(exc=RuntimeError(f"try {self.request.retries + 1} failed"))
    return self.request.retries


@job(queue="other")
def on_other_queue(x):
    return x * 2


@job(time_limit=1)
def spin_forever():
    """Never returns: only the hard time limit stops it."""
    while True:
        pass


@job(soft_time_limit=0.5)
def tidy_up_when_told():
    from jobs.exceptions import SoftTimeLimitExceeded

    try:
        time.sleep(5)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "not interrupted"


@job(reject_on_worker_lost=False)
def die_once():
    """Kills the process running it; recorded FAILURE (WorkerLostError), not run again."""
    os.kill(os.getpid(), 9)


@job
def die_always():
    """A poison job: kills every process that runs it, so it is redelivered until it is
    dead-lettered."""
    os.kill(os.getpid(), 9)


@job(ignore_result=True)
def die_always_quietly():
    """``die_always`` for a job that records nothing: the worker counts its losses."""
    os.kill(os.getpid(), 9)


@job
def pid():
    return os.getpid()


@job
def work(i, seconds=0.005):
    """A small unit of work for load and chaos tests."""
    time.sleep(seconds)
    return i


def fails_on(i: int, attempt: int) -> bool:
    """Whether attempt ``attempt`` (0 = first) of job ``i`` of ``unreliable`` fails: two in
    five attempts, the same on every run, so a test can tell the right outcome."""
    return zlib.crc32(f"{i}:{attempt}".encode()) % 5 < 2


@job(autoretry_for=(ConnectionError,), max_retries=3, retry_backoff=0.2, retry_backoff_max=1)
def unreliable(i):
    attempt = unreliable.request.retries
    if fails_on(i, attempt):
        raise ConnectionError(f"job {i} attempt {attempt} failed")
    return i


@job(acks_late=False)
def at_most_once(seconds):
    """Acknowledged before it runs: if its worker dies meanwhile, it is not run again."""
    time.sleep(seconds)
    return "done"


@job(unique=True)
def refresh_report(report_id, seconds=0.0):
    """One refresh per report at a time: a second call while one is queued or running is
    not sent again (unique)."""
    time.sleep(seconds)
    return report_id


@job(rate_limit="5/s")
def limited(i):
    """At most five starts a second in each worker."""
    return i


@job(rate_limit="1/h")
def hourly(i):
    """Once an hour in each worker: a second call waits, unless its limit is changed."""
    return i


@job(global_rate_limit="4/s")
def globally_limited(i):
    """At most four starts a second in all the workers together."""
    return i


@job
def leave_mark(directory, i, seconds=0.05):
    """Sleeps, then appends a line to the file named ``i`` in ``directory``: a side effect
    that can be checked after the fact (one line per run), made even while the database
    is down."""
    time.sleep(seconds)
    with open(os.path.join(directory, str(i)), "a") as out:
        out.write(f"{os.getpid()}\n")
    return i


@job(ignore_result=True)
def leave_mark_quietly(directory, i):
    """leave_mark for a job that records nothing."""
    return leave_mark(directory, i, 0)


@job(ignore_result=True)
def nap_quietly(directory, i, seconds=0.0, padding=""):
    """Sleeps, then appends this process's id to the file named ``i`` in ``directory``,
    recording nothing in the database (``padding``: to send a larger message)."""
    time.sleep(seconds)
    with open(os.path.join(directory, str(i)), "a") as out:
        out.write(f"{os.getpid()}\n")
    return i


@job
def count_results():
    """One query of the ORM."""
    from jobs.models import JobRecord

    return JobRecord.objects.count()


@job
def stall_once(directory):
    """The first run leaves a file ``started`` in ``directory`` and hangs for a minute;
    any later run (the message delivered again) returns "again" at once."""
    started = os.path.join(directory, "started")
    if os.path.exists(started):
        return "again"
    open(started, "w").close()
    time.sleep(60)
    return "first"


@job(bind=True)
def note_due_time(self, directory):
    """Appends its job id to a file of ``directory`` named for the due time of the periodic
    run that sent it: a due time sent twice shows as two different ids in one file."""
    due = self.request.headers.get("periodic_task_due_at") or "unscheduled"
    with open(os.path.join(directory, due), "a") as out:
        out.write(f"{self.request.id}\n")


@job(bind=True, default_retry_delay=0)
def retry_without_raise(self, directory):
    """Celery-style: calls ``self.retry()`` without ``raise`` when its first try fails. Each
    run appends a line to ``directory/log``: "ran N" at the start, "past retry N" after
    the retry call (a run that retried must never write it)."""
    log = os.path.join(directory, "log")
    with open(log, "a") as out:
        out.write(f"ran {self.request.retries}\n")
    if self.request.retries == 0:
        try:
            raise ConnectionError("the service is down")
        except ConnectionError as exc:
            self.retry(exc=exc, countdown=0)
    with open(log, "a") as out:
        out.write(f"past retry {self.request.retries}\n")
    return self.request.retries


def _wait_for_path(path: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.02)


@job(bind=True)
def step_by_step(self, directory, total):
    """Reports PROGRESS {"current": i, "total": total} and goes on to step i + 1 only once
    the file ``directory/go-<i>`` exists: a test moves it along and watches."""
    for i in range(total):
        self.update_state(state="PROGRESS", meta={"current": i, "total": total})
        _wait_for_path(os.path.join(directory, f"go-{i}"))
    return total


@job(bind=True, max_retries=1)
def retry_in(self, seconds):
    """Fails its first run and asks to be retried ``seconds`` later."""
    if self.request.retries == 0:
        raise self.retry(countdown=seconds)
    return "done after 1 retry"


# Workflows (tests/test_canvas*.py) ------------------------------------------------------------


@job
def mul(x, y):
    return x * y


@job
def tally(values, directory=None):
    """A chord's body: the sum of the header's results; with ``directory``, leaves a mark
    per run, so a test can tell it ran once."""
    if directory:
        import uuid
        from pathlib import Path

        Path(directory, f"run-{uuid.uuid4().hex}").write_text(json.dumps(values))
    return sum(values)


@job
def noted_failure(job_id, directory=None):
    """An errback: takes the failed job's id (Celery's link_error calling convention)."""
    if directory:
        from pathlib import Path

        Path(directory, f"errback-{job_id}").write_text(str(job_id))
    return job_id


@job
def boom(*args):
    raise ValueError(f"boom {args!r}")


@job
def wait_for_file(path, value=None, timeout=30.0):
    """Runs until ``path`` exists (a test creates it), then returns ``value``."""
    from pathlib import Path

    deadline = time.monotonic() + timeout
    while not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


@job
async def async_add(x, y):
    await asyncio.sleep(0.01)
    return x + y


@job
async def async_wait(seconds):
    """Waits on I/O (a timer) for ``seconds``; returns the thread it ran in."""
    await asyncio.sleep(seconds)
    return {"waited": seconds, "pid": os.getpid()}


@job(time_limit=0.5)
async def async_overrun(path):
    """Waits far past its time limit; writes ``path`` as it is cancelled."""
    try:
        await asyncio.sleep(30)
    finally:
        with open(path, "w") as f:
            f.write("cancelled")


@job
async def async_count_results():
    """The ORM from async code, the way Django allows it."""
    from jobs.models import JobRecord

    return await JobRecord.objects.acount()


@job
async def async_count_results_unsafely():
    """The ORM called synchronously from async code: Django refuses it."""
    from jobs.models import JobRecord

    return JobRecord.objects.count()


@job
def blocking_wait(seconds):
    """Waits on blocking I/O (a sleep, which gevent makes cooperative)."""
    time.sleep(seconds)
    return {"waited": seconds, "pid": os.getpid()}


@job(bind=True)
def note_worker(self, directory, name):
    """Appends the name of the worker running it to the file ``name`` in ``directory``: one
    line per run, to count who ran a broadcast job and how often."""
    with open(os.path.join(directory, name), "a") as out:
        out.write(f"{self.request.hostname}\n")
    return self.request.hostname


@job
def process_memory():
    """What the process running it holds: the objects it keeps out of garbage collections
    (``gc.freeze``), the modules loaded since they were frozen (in a prefork child: by the
    child itself), how many memory pages a full collection wrote to for the first time here
    (in a prefork child, each is a page copied from the worker), and every module it has."""
    import gc
    import resource
    import sys

    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    gc.collect()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    # Listing objects writes to each (its reference count): after the count above.
    unfrozen = {id(o) for o in gc.get_objects()}  # the frozen generation is left out
    loaded_since = sorted(name for name, module in list(sys.modules.items())
                          if getattr(module, "__dict__", None) is not None
                          and id(module.__dict__) in unfrozen)
    return {"pid": os.getpid(), "frozen": gc.get_freeze_count(), "loaded_since": loaded_since,
            "pages_written": faults, "modules": sorted(sys.modules)}
