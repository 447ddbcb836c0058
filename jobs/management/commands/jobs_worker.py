import logging
import os
import sys

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError

from jobs.broker import get_broker
from jobs.conf import settings
from jobs.exceptions import ConfigurationError
from jobs.log import configure as configure_logging
from jobs.management.apart import check_apart
from jobs.transport import unavailable
from jobs.worker import Worker, banner
from jobs.worker.pidfile import AlreadyRunning, pidfile
from jobs.worker.pools import POOLS


class Command(BaseCommand):
    help = "Start a worker that runs jobs from the broker's queues."
    requires_system_checks = "__all__"

    def add_arguments(self, parser):
        parser.add_argument("-Q", "--queues", default=None,
                            help="Comma-separated queues to consume (default: the default queue).")
        parser.add_argument("-c", "--concurrency", type=int, default=None,
                            help="Jobs run at once (default: JOBS WORKER_CONCURRENCY or CPUs).")
        parser.add_argument("-P", "--pool", choices=sorted(POOLS), default=None,
                            help="Where jobs run: prefork (processes), threads, solo, asyncio "
                                 "(async def jobs on one event loop), or gevent.")
        parser.add_argument("-n", "--hostname", default=None, help="This worker's name.")
        parser.add_argument("-l", "--loglevel", default="INFO",
                            help="DEBUG, INFO, WARNING, ERROR or CRITICAL.")
        parser.add_argument("--prefetch-multiplier", type=int, default=None,
                            help="Messages reserved per pool slot (1 is fairest for long jobs).")
        parser.add_argument("--shutdown-timeout", type=float, default=None,
                            help="Seconds a warm shutdown waits for running jobs.")
        parser.add_argument("--max-tasks-per-child", type=int, default=None,
                            help="Replace a prefork child after this many jobs.")
        parser.add_argument("-B", "--beat", action="store_true",
                            help="Also run the periodic-job scheduler (jobs_beat) in this "
                                 "process; for small deployments.")
        parser.add_argument("--metrics-port", type=int, default=None,
                            help="Serve Prometheus metrics on this port (the 'prometheus' "
                                 "extra).")
        parser.add_argument("--max-memory-per-child", type=int, default=None,
                            help="Replace a prefork child once its resident memory passes "
                                 "this many KiB (checked after each job).")
        parser.add_argument("--autoscale", default=None, metavar="MAX,MIN",
                            help="Grow the pool up to MAX while jobs wait, and shrink it to MIN "
                                 "(default 0) when idle; prefork and threads pools.")
        parser.add_argument("--pidfile", default=None,
                            help="Write the worker's process id to this file; refuse to start "
                                 "if it names a running process.")
        parser.add_argument("-f", "--logfile", default=None,
                            help="Write the log to this file, reopened on SIGHUP (logrotate).")

    def execute(self, *args, **options):
        if (options.get("pool") or settings.WORKER_POOL) == "gevent":
            restart_patched_for_gevent()
        # Before the system checks (jobs.E013 says the same): one line, not a report.
        reason = unavailable(get_broker().url)
        if reason:
            raise CommandError(reason)
        return super().execute(*args, **options)

    def check(self, **options):
        # In a child process, so the URLconf the checks import (views, the admin's, the
        # dashboard's, prometheus_client) stays out of the worker and its prefork children.
        if os.environ.get(PATCHED):  # gevent's patched process: forking it is gevent's affair
            return super().check(**options)
        return check_apart(self, super().check, **options)

    def handle(self, *args, **options):
        level = options["loglevel"].upper()
        if level not in logging.getLevelNamesMapping():
            raise CommandError(f"--loglevel: unknown level {options['loglevel']!r}")
        if options["concurrency"] is not None and options["concurrency"] < 1:
            raise CommandError("--concurrency must be at least 1")
        autoscale = _autoscale(options["autoscale"], options["pool"] or settings.WORKER_POOL)
        if options["pidfile"]:
            try:
                with pidfile(options["pidfile"]):
                    self._run(options, level, autoscale)
            except AlreadyRunning as exc:
                raise CommandError(f"--pidfile: {exc}") from None
        else:
            self._run(options, level, autoscale)

    def _run(self, options, level, autoscale):
        configure_logging(level, options["logfile"])
        if options["beat"] and not apps.is_installed("jobs_beat"):
            raise CommandError("--beat needs 'jobs_beat' in INSTALLED_APPS")
        queues = [q.strip() for q in (options["queues"] or "").split(",") if q.strip()]
        worker = Worker(
            queues=queues or None,
            concurrency=options["concurrency"],
            pool=options["pool"],
            hostname=options["hostname"],
            prefetch_multiplier=options["prefetch_multiplier"],
            shutdown_timeout=options["shutdown_timeout"],
            max_tasks_per_child=options["max_tasks_per_child"],
            max_memory_per_child=options["max_memory_per_child"],
            beat=options["beat"],
            autoscale=autoscale,
        )
        if options["beat"]:
            from jobs_beat.scheduler import embed

            embed(worker)  # runs while the worker runs, in a thread of its own
        if options["metrics_port"] is not None:
            serve_metrics(options["metrics_port"])
        self.stdout.write(banner(worker))
        self.stdout.flush()
        known = get_broker().known_queues()
        for name in worker.queues:
            if name not in known:
                logging.getLogger("jobs.worker").warning(
                    "Consuming queue %r, which no route sends to (not the default queue, not "
                    "in TASK_QUEUES or TASK_ROUTES): only jobs sent with queue=%r arrive there.",
                    name, name)
        try:
            code = worker.run()
        except ConfigurationError as exc:  # e.g. a pool that can't start here: say why
            raise CommandError(str(exc)) from exc
        if code:
            sys.exit(code)


def _autoscale(value: str | None, pool: str) -> tuple[int, int] | None:
    """``--autoscale MAX,MIN`` (MIN may be left out: 0) as (MAX, MIN)."""
    if value is None:
        return None
    try:
        numbers = [int(part) for part in value.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        numbers.append(0)
    if len(numbers) != 2 or numbers[0] < 1 or not 0 <= numbers[1] <= numbers[0]:
        raise CommandError(f"--autoscale {value!r}: give MAX,MIN with MAX >= 1 and "
                           "0 <= MIN <= MAX, e.g. --autoscale 10,2")
    if pool == "solo":
        raise CommandError("--autoscale needs the prefork or threads pool (-P prefork)")
    return numbers[0], numbers[1]


def serve_metrics(port: int) -> None:
    try:
        from jobs.metrics import serve
    except ImportError as exc:
        raise CommandError(f"--metrics-port needs prometheus-client: pip install "
                           f"'jobs-for-django[prometheus]' ({exc})") from exc
    try:
        serve(port)
    except OSError as exc:
        raise CommandError(f"--metrics-port {port}: {exc}") from exc


#: In the environment of the worker that :func:`restart_patched_for_gevent` starts.
PATCHED = "JOBS_GEVENT_PATCHED"

#: What that worker runs: gevent patches the standard library (sockets, threads, ``select``,
#: ``time.sleep``) before anything that uses it is imported — Django, kombu, redis,
#: psycopg — or those would keep the blocking versions and one waiting job would stall every
#: other; then ``manage.py`` (``sys.argv`` after ``-c``) runs as it was started.
BOOT = ("from gevent import monkey; monkey.patch_all(); import runpy, sys; "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def restart_patched_for_gevent() -> None:
    """Start this command again in a process that gevent patched before Django loaded
    (:data:`BOOT`), unless this is that process."""
    import importlib.util
    import os

    if os.environ.get(PATCHED):
        return
    if importlib.util.find_spec("gevent") is None:
        raise CommandError("-P gevent needs gevent: pip install 'jobs-for-django[gevent]'")
    os.environ[PATCHED] = "1"
    os.execv(sys.executable, [sys.executable, "-c", BOOT, *sys.argv])
