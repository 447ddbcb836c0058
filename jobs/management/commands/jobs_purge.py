from django.core.management.base import BaseCommand, CommandError

from jobs.broker import get_broker


class Command(BaseCommand):
    help = ("Discard the messages waiting in queues (Celery's `celery purge`). Jobs a worker "
            "holds and delayed jobs not yet due are left alone. Asks first, unless --force.")

    def add_arguments(self, parser):
        parser.add_argument(
            "-Q", "--queues", action="append", default=[], metavar="QUEUE[,QUEUE]",
            help="Queues to purge (repeat or comma-separate). Default: the default queue and "
                 "every queue TASK_ROUTES sends to.")
        parser.add_argument(
            "-X", "--exclude-queues", action="append", default=[], metavar="QUEUE[,QUEUE]",
            help="Queues to leave alone.")
        parser.add_argument("-f", "--force", action="store_true",
                            help="Don't ask for confirmation.")

    def handle(self, *args, queues, exclude_queues, force, **options):
        names = _names(queues) or get_broker().known_queues()
        names = sorted(names - _names(exclude_queues))
        if not names:
            raise CommandError("no queue left to purge (every one named is excluded)")
        listed = ", ".join(names)
        if not force:
            answer = input(f"Discard every message waiting in {listed} on "
                           f"{get_broker().display_url}? This can't be undone. [yes/no]: ")
            if answer.strip().lower() not in ("y", "yes"):
                self.stdout.write("Nothing purged.")
                return
        purged = get_broker().purge(names)
        noun = "message" if purged == 1 else "messages"
        queue_noun = "queue" if len(names) == 1 else "queues"
        self.stdout.write(f"Purged {purged} {noun} from {len(names)} {queue_noun} ({listed}).")


def _names(values: list[str]) -> set[str]:
    return {name.strip() for value in values for name in value.split(",") if name.strip()}

