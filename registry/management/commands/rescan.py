"""Re-judge stored versions under the current scanner and policy."""

from django.core.management.base import BaseCommand

from registry.services import rescan


class Command(BaseCommand):
    help = (
        "Scan the stored bytes of every ready or quarantined version (of one model with "
        "--model) again. A version now found unsafe is quarantined; where it is live, an "
        "event and a webhook fire and a 'quarantined' alert fires on the environment. Run "
        "it after upgrading Modelgate or changing MODELGATE_SCAN_UNSAFE_GLOBALS."
    )

    def add_arguments(self, parser):
        parser.add_argument("--model", help="only this model's versions")

    def handle(self, *args, model=None, **options):
        counts: dict[str, int] = {}
        quarantined = []
        for version in rescan.rescannable(model):
            outcome = rescan.rescan_version(version.pk)
            counts[outcome["after"]] = counts.get(outcome["after"], 0) + 1
            line = f"{version}: {outcome['before'] or 'not scanned'} -> {outcome['after']}"
            if outcome["quarantined"]:
                quarantined.append(str(version))
                live = ", ".join(outcome["alerts"])
                line += " QUARANTINED" + (f" (alert fired in {live})" if live else "")
            self.stdout.write(line)
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none"
        self.stdout.write(f"Rescanned: {summary}; newly quarantined: {len(quarantined)}.")
