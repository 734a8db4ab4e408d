"""Re-wrap every blob's data key under the current master key, without rewriting blobs.

Run it with the new key as MODELGATE_ENCRYPTION_KEY and the old one(s) in
MODELGATE_ENCRYPTION_OLD_KEYS. Each record is replaced on its own and records already
under the new key are skipped, so an interrupted run is finished by running it again.
"""

from django.core.management.base import BaseCommand, CommandError

from registry.storage import get_store


class Command(BaseCommand):
    help = "Re-wrap all data keys under MODELGATE_ENCRYPTION_KEY (old keys from ..._OLD_KEYS)."

    def handle(self, *args, **options):
        store = get_store()
        objects = getattr(store, "objects", None)
        if not store.encrypted or not hasattr(objects, "rotate"):
            raise CommandError("Encryption at rest is off: set MODELGATE_ENCRYPTION_KEY first.")
        report = objects.rotate()
        for failure in report.failed:
            self.stderr.write(f"not re-wrapped: {failure}")
        summary = (
            f"Re-wrapped {report.rewrapped} data key(s); {report.current} already under key "
            f"{objects.keyring.current_id}; {len(report.failed)} failed."
        )
        if report.failed:
            raise CommandError(summary + " Configure the missing old key(s) and run it again.")
        self.stdout.write(summary)
