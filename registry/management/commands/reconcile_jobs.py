"""Re-send background jobs that were lost on the way to a worker (beat does this too)."""

from django.core.management.base import BaseCommand

from registry.services import jobs


class Command(BaseCommand):
    help = "Re-publish queued jobs whose message was lost and jobs whose worker died."

    def handle(self, *args, **options):
        self.stdout.write(f"Re-sent {jobs.reconcile()} job(s).")
