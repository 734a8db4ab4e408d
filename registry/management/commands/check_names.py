"""List stored names that today's rules refuse (a one-off after the rules tightened)."""

from django.core.management.base import BaseCommand, CommandError

from registry.services.name_audit import stale_names


class Command(BaseCommand):
    help = (
        "Check every stored model, alias and environment name and every version and "
        "artifact file path against the current validation, and list those that no longer "
        "pass (nothing is changed). Exits 1 if any is found."
    )

    def handle(self, *args, **options):
        found = 0
        for what, name, reason in stale_names():
            found += 1
            self.stdout.write(f"{what} {name}: {reason}")
        if found:
            raise CommandError(f"{found} stored name(s) no longer pass; rename or remove them.")
        self.stdout.write("Every stored name passes.")
