"""``manage.py jobs_control revoke|shutdown|...``: tell the live workers, as ``celery control``."""

from django.core.management.base import BaseCommand, CommandError

from jobs.control import CONTROL, broadcast, rate_limit, reset_rate_limit, revoke
from jobs.management.commands.jobs_inspect import add_common_arguments, destination, output

#: command -> (the names of its arguments, how many of them are required)
ARGUMENTS = {
    "revoke": (("job_ids",), 1), "terminate": (("job_ids",), 1), "shutdown": ((), 0),
    "add_consumer": (("queue",), 1), "cancel_consumer": (("queue",), 1),
    "rate_limit": (("job_name", "rate"), 1), "time_limit": (("job_name", "soft", "hard"), 2),
    "pool_grow": (("n",), 0), "pool_shrink": (("n",), 0),
}
USAGE = {
    "revoke": "revoke JOB_ID [JOB_ID ...] [--terminate]", "terminate": "terminate JOB_ID [...]",
    "shutdown": "shutdown", "add_consumer": "add_consumer QUEUE",
    "cancel_consumer": "cancel_consumer QUEUE",
    "rate_limit": "rate_limit JOB_NAME RATE [--global] | JOB_NAME --reset",
    "time_limit": "time_limit JOB_NAME SOFT [HARD]", "pool_grow": "pool_grow [N]",
    "pool_shrink": "pool_shrink [N]",
}


def arguments_of(command: str, values: list[str]) -> dict:
    """The command's arguments from the words after it; CommandError with its usage if wrong."""
    names, required = ARGUMENTS[command]
    if names == ("job_ids",):
        if not values:
            raise CommandError(f"usage: jobs_control {USAGE[command]}")
        return {"job_ids": values}
    if not required <= len(values) <= len(names):
        raise CommandError(f"usage: jobs_control {USAGE[command]}")
    arguments = dict(zip(names, values, strict=False))
    if command == "rate_limit" and arguments.get("rate") in ("none", "None"):
        arguments["rate"] = "0"
    for name in ("n", "soft", "hard"):
        if name in arguments:
            try:
                arguments[name] = float(arguments[name]) if name != "n" else int(arguments[name])
            except ValueError:
                raise CommandError(f"{name} must be a number, not {arguments[name]!r}") from None
    return arguments


class Command(BaseCommand):
    help = "Tell the live workers what to do."

    def add_arguments(self, parser):
        parser.add_argument("command", choices=CONTROL)
        parser.add_argument("arguments", nargs="*", help="The command's: " + "; ".join(
            USAGE[command] for command in CONTROL) + ".")
        parser.add_argument("--terminate", action="store_true",
                            help="revoke: stop the job too if it is running.")
        parser.add_argument("--global", action="store_true", dest="is_global",
                            help="rate_limit: the rate for all workers together, not each.")
        parser.add_argument("--reset", action="store_true",
                            help="rate_limit: give the job back the limits of its code.")
        add_common_arguments(parser)

    def handle(self, *args, **options):
        command = options["command"]
        arguments = arguments_of(command, options["arguments"])
        where, timeout = destination(options), options["timeout"]
        if command in ("revoke", "terminate"):
            answers = revoke(arguments["job_ids"], command == "terminate" or options["terminate"],
                             where, timeout)
            if not answers:  # recorded for good all the same
                self.stdout.write(f"Revoked {len(arguments['job_ids'])} job(s); no worker "
                                  "answered: each refuses them when it receives them.")
                return
        elif command == "rate_limit":
            answers = self.rate_limit(arguments, options, where, timeout)
        else:
            answers = broadcast(command, arguments, where, timeout)
        self.stdout.write(output(command, answers, options))

    def rate_limit(self, arguments: dict, options: dict, where, timeout) -> dict:
        """Saved (unless -d names workers), then told to the live workers."""
        name, rate = arguments["job_name"], arguments.get("rate")
        if options["reset"] == (rate is not None):
            raise CommandError(f"usage: jobs_control {USAGE['rate_limit']}")
        try:
            if options["reset"]:
                return reset_rate_limit(name, where, timeout)
            return rate_limit(name, rate, is_global=options["is_global"], destination=where,
                              timeout=timeout)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
