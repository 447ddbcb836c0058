"""``manage.py jobs_inspect ping|active|...``: ask the live workers, as ``celery inspect``."""

import json

from django.core.management.base import BaseCommand, CommandError

from jobs.control import INSPECT, broadcast
from jobs.control.render import render


def add_common_arguments(parser) -> None:
    parser.add_argument("-d", "--destination", action="append", default=None,
                        metavar="WORKER", help="Only this worker (a name such as jobs@host; "
                        "repeat, or separate with commas, for several).")
    parser.add_argument("-t", "--timeout", type=float, default=1.0,
                        help="Seconds to wait for answers (default: 1).")
    parser.add_argument("-j", "--json", action="store_true", help="Print the answers as JSON.")


def destination(options) -> list[str] | None:
    names = [n.strip() for d in options["destination"] or () for n in d.split(",") if n.strip()]
    return names or None


def output(command, answers: dict, options) -> str:
    if not answers:
        raise CommandError(f"No worker answered {command} within {options['timeout']:g}s.")
    return json.dumps(answers, indent=2, sort_keys=True) if options["json"] else render(answers)


class Command(BaseCommand):
    help = "Ask the live workers what they are doing."

    def add_arguments(self, parser):
        parser.add_argument("command", choices=INSPECT)
        add_common_arguments(parser)

    def handle(self, *args, **options):
        answers = broadcast(options["command"], {}, destination(options), options["timeout"])
        if options["command"] == "scheduled" and answers and not destination(options):
            # Jobs due later than a second wait in the database, not in a worker.
            answers[PARKED] = parked()
        self.stdout.write(output(options["command"], answers, options))


PARKED = "(parked in the database until due)"
PARKED_SHOWN = 100


def parked() -> list[dict]:
    """The delayed jobs waiting in the database, soonest first (the first 100)."""
    from django.utils import timezone

    from jobs.display import payload_headers
    from jobs.models import Message

    rows = Message.objects.filter(visible_at__gt=timezone.now()).order_by("visible_at", "id")
    jobs = []
    for row in rows[:PARKED_SHOWN]:
        headers = payload_headers(row)
        jobs.append({"id": headers.get("id"), "name": headers.get("task"),
                     "args": headers.get("argsrepr"), "kwargs": headers.get("kwargsrepr"),
                     "queue": row.queue, "eta": row.visible_at.isoformat()})
    return jobs
