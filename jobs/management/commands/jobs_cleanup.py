from django.core.management.base import BaseCommand, CommandError

from jobs import housekeeping


class Command(BaseCommand):
    help = ("Delete expired job results, dead letters, the rows of workers gone for a day and "
            "expired unique locks now, as the workers do every minute or so.")

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true",
                            help="Count what would be deleted; delete nothing.")

    def handle(self, *args, dry_run=False, **options):
        if dry_run:
            counts, verb = housekeeping.expired_counts(), "would be deleted"
        else:
            try:
                counts, verb = housekeeping.sweep_all().deleted, "deleted"
            except housekeeping.LeaseHeld as exc:
                raise CommandError(str(exc)) from exc
        for kind, count in counts.items():
            self.stdout.write(f"{kind}: {count} {verb}")
        for kind, reason in housekeeping.kept().items():
            self.stdout.write(f"{kind}: kept ({reason})")
