"""Bring a backup back on an empty installation (migrated, same store settings and key)."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from registry.errors import RegistryError
from registry.services import store_care


class Command(BaseCommand):
    help = (
        "Restore a directory written by `backup` into an empty, migrated installation: blobs "
        "first, then the database; every blob is read back and checked against its sha256."
    )

    def add_arguments(self, parser):
        parser.add_argument("directory", type=Path)
        parser.add_argument("--no-verify", action="store_true", help="skip reading blobs back")

    def handle(self, *args, directory: Path, no_verify=False, **options):
        try:
            report = store_care.restore(directory, verify=not no_verify)
        except RegistryError as exc:
            raise CommandError(exc.message) from None
        for digest, problem in sorted(report.problems.items()):
            self.stdout.write(f"{digest}: {problem}")
        summary = f"Restored the database and {report.blobs} blob(s) ({report.bytes} byte(s))."
        if report.problems:
            raise CommandError(f"{summary} {len(report.problems)} blob(s) failed verification.")
        self.stdout.write(summary)
