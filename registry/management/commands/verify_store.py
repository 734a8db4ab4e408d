"""Re-hash every stored blob; report missing and corrupt ones and mark their versions."""

from django.core.management.base import BaseCommand, CommandError

from registry.services import store_care


class Command(BaseCommand):
    help = (
        "Read back every blob (decrypting and authenticating it when encrypted), compare it "
        "with its sha256, check that every file the registry refers to is stored, mark the "
        "affected versions (event version.integrity_failed, status_reason) and exit "
        "non-zero naming them when anything is wrong."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--sample",
            type=float,
            help="check only this share (0-1) of the referenced blobs, chosen at random",
        )
        parser.add_argument("--no-mark", action="store_true", help="report only")

    def handle(self, *args, sample=None, no_mark=False, **options):
        if sample is not None and not 0 < sample <= 1:
            raise CommandError("--sample must be more than 0 and at most 1.")
        report = store_care.verify_store(sample=sample, mark=not no_mark)
        for digest, problem in sorted(report.problems.items()):
            users = store_care.users_of(digest)
            self.stdout.write(
                f"{digest}: {problem}; used by {', '.join(users) if users else 'nothing'}"
            )
        missing = sum(p.startswith("missing") for p in report.problems.values())
        summary = (
            f"Checked {report.checked} blob(s), {report.bytes} byte(s): "
            f"{len(report.problems) - missing} damaged, {missing} missing."
        )
        if report.problems:
            raise CommandError(summary)
        self.stdout.write(summary)
