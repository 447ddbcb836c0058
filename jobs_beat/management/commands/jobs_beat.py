import logging
import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from jobs.log import configure as configure_logging
from jobs_beat.scheduler import Scheduler


class Command(BaseCommand):
    help = "Run the scheduler that sends periodic jobs when they are due."
    requires_system_checks = "__all__"

    def add_arguments(self, parser):
        parser.add_argument("-l", "--loglevel", default="INFO",
                            help="DEBUG, INFO, WARNING, ERROR or CRITICAL.")
        parser.add_argument("--tick", type=float, default=1.0,
                            help="Longest wait, in seconds, between looks at the database.")
        parser.add_argument("--no-sync", action="store_true",
                            help="Don't sync JOBS_BEAT_SCHEDULE into the database at start.")

    def handle(self, *args, loglevel: str, tick: float, no_sync: bool, **options):
        level = loglevel.upper()
        if level not in logging.getLevelNamesMapping():
            raise CommandError(f"--loglevel: unknown level {loglevel!r}")
        if tick <= 0:
            raise CommandError("--tick must be a positive number of seconds")
        configure_logging(level)
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        Scheduler(tick=tick, sync_settings=not no_sync).run(stop)
