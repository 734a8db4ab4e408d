"""Write a consistent snapshot of the database and every referenced blob to a directory."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from registry.errors import RegistryError
from registry.services import store_care


class Command(BaseCommand):
    help = (
        "Back up the database (one snapshot, as dumpdata JSON) and every blob it refers to, "
        "exactly as stored (encrypted blobs stay encrypted, with their key records), into a "
        "new directory. The master key is NOT part of it: keep it safe separately."
    )

    def add_arguments(self, parser):
        parser.add_argument("directory", type=Path, help="a new or empty directory")

    def handle(self, *args, directory: Path, **options):
        try:
            report = store_care.backup(directory)
        except RegistryError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(
            f"Backed up the database and {report.blobs} blob(s) ({report.objects} object(s), "
            f"{report.bytes} byte(s)) to {report.path}."
        )
