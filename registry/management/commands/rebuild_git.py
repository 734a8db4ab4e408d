"""Recreate the Git mirror from the database (the database is the source of truth)."""

from django.core.management.base import BaseCommand

from registry.services import gitmirror


class Command(BaseCommand):
    help = "Delete and rebuild the registry's Git history from the database."

    def handle(self, *args, **options):
        done = gitmirror.rebuild()
        self.stdout.write(
            f"Rebuilt: {done['versions']} version commits, {done['promotions']} promotion tags."
        )
