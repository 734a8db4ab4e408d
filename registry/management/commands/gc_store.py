"""Remove blobs nothing references any more, stale staged uploads and leftovers."""

from django.core.management.base import BaseCommand, CommandError

from registry.services import store_care


class Command(BaseCommand):
    help = (
        "Delete blobs no version file, package, MLflow artifact or in-flight upload refers "
        "to and that nobody has touched for MODELGATE_GC_GRACE_SECONDS (and the in-flight "
        "window MODELGATE_GC_INFLIGHT_SECONDS), plus staged uploads and temporary objects "
        "left behind. Safe to run while uploads go on."
    )

    def add_arguments(self, parser):
        parser.add_argument("--grace", type=float, help="seconds (default: the setting)")
        parser.add_argument(
            "--inflight",
            type=float,
            help="seconds an upload may take between storing a blob and recording it "
            "(default: the setting; lower it only when nothing is uploading)",
        )
        parser.add_argument("--dry-run", action="store_true", help="only say what would go")

    def handle(self, *args, grace=None, inflight=None, dry_run=False, **options):
        if (grace is not None and grace < 0) or (inflight is not None and inflight < 0):
            raise CommandError("--grace and --inflight must not be negative.")
        report = store_care.collect_garbage(grace, inflight, dry_run=dry_run)
        if report.busy:
            raise CommandError("Another gc_store or backup is running; try again later.")
        verb = "Would delete" if dry_run else "Deleted"
        for digest in report.deleted:
            self.stdout.write(f"{verb.lower()} {digest}", self.style.NOTICE)
        self.stdout.write(
            f"{verb} {len(report.deleted)} blob(s), {report.uploads_aborted} stale upload(s), "
            f"{report.leftovers_removed} leftover object(s)."
        )
        if report.kept_recent or report.kept_uploads:
            # Why something unreferenced is still there, and how to free it when it must go.
            self.stdout.write(
                f"Kept {report.kept_recent} unreferenced blob(s) "
                f"({report.kept_recent_bytes / 1024**2:.1f} MiB) and {report.kept_uploads} "
                f"staged upload(s) touched within the last {report.window_seconds:g} s "
                "(the grace and in-flight windows: an upload may still be about to record "
                "them). To free them now, when nothing is uploading:\n"
                "  python manage.py gc_store --grace 0 --inflight 0"
            )
