"""The chaos test's view of its private database, run as a subprocess:

    DATABASE_URL=<private> python -m tests.chaos_db setup        # prints the tokens
    DATABASE_URL=<private> python -m tests.chaos_db check < results.json

The pytest process's own Django database is the usual test database; this one is the
private Postgres the chaos test restarts, so it is reached from a process of its own.
`check` prints {"problems": [...], "summary": {...}}: bench.soak's invariants plus no
duplicate versions, verify_store clean, the Git mirror's documents = the versions in its
history (ready) and its promotion tags = the promoted promotions.
"""

import json
import os
import subprocess
import sys


def setup() -> dict[str, str]:
    """The people the load acts as (kept in one place: how users get write access is
    bench.soak.setup_people's business), plus an administrator for deleting a model."""
    from django.contrib.auth.models import User

    from bench.soak import setup_people
    from registry.services.tokens import create_token

    author, reviewer = setup_people()
    admin = User.objects.create_superuser("chaos-admin", password=os.urandom(8).hex())
    return {"author": author, "reviewer": reviewer, "admin": create_token(admin, "chaos")[1]}


def git(*args: str) -> str:
    from django.conf import settings

    return subprocess.run(
        ["git", "-C", str(settings.MODELGATE_GIT_DIR), *args],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def mirror_versions() -> list[tuple[str, int]]:
    """(model, number) of every version document in the mirror's HEAD."""
    out = git("ls-tree", "-r", "--name-only", "HEAD", "--", "models/")
    found = []
    for path in out.split():
        _, name, leaf = path.split("/", 2)
        found.append((name, int(leaf.removesuffix(".yaml"))))
    return found


def check(results: list[dict]) -> dict:
    from collections import Counter

    from django.core.management import CommandError, call_command
    from django.db.models import Count

    from bench.soak import check_invariants, summary
    from registry.models import ModelVersion, Promotion
    from registry.services.gitmirror import _in_history

    problems = check_invariants(results)
    duplicates = list(
        ModelVersion.objects.values("model__name", "number")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .values_list("model__name", "number")
    )
    problems += [f"duplicate version {name} {number}" for name, number in duplicates]
    stuck = list(ModelVersion.objects.filter(state="processing").values_list("id", flat=True))
    problems += [f"version {pk} still processing" for pk in stuck]

    try:
        call_command("verify_store", "--no-mark", stdout=sys.stderr)
    except CommandError as exc:
        problems.append(f"verify_store: {exc}")

    history = Counter(_in_history().values_list("model__name", "number"))
    ready = Counter(ModelVersion.objects.filter(state="ready").values_list("model__name", "number"))
    mirrored = Counter(mirror_versions())
    if history != ready:
        problems.append(f"versions in the history that are not ready: {history - ready}")
    if mirrored != ready:
        problems.append(
            f"Git mirror vs ready versions: missing {sorted(ready - mirrored)[:20]}, "
            f"extra {sorted(mirrored - ready)[:20]}"
        )
    registered = Counter(
        line.removeprefix("Register ")
        for line in git("log", "--format=%s", "HEAD").splitlines()
        if line.startswith("Register ")
    )
    if sum(registered.values()) != sum(ready.values()) or max(registered.values(), default=1) > 1:
        problems.append(
            f"{sum(registered.values())} 'Register' commits ({len(registered)} distinct) for "
            f"{sum(ready.values())} ready versions"
        )
    tags = {t for t in git("tag", "--list").split() if t.count("#") == 2}
    promoted = {
        f"{p.model.name}#{p.environment.name}#{p.sequence}"
        for p in Promotion.objects.filter(state="promoted").select_related("model", "environment")
    }
    if tags != promoted:
        problems.append(
            f"promotion tags vs promoted promotions: missing {sorted(promoted - tags)[:20]}, "
            f"extra {sorted(tags - promoted)[:20]}"
        )
    return {
        "problems": problems,
        "summary": {
            **summary(results),
            "ready_versions": sum(ready.values()),
            "mirror_versions": sum(mirrored.values()),
            "promotion_tags": len(tags),
            "promoted": len(promoted),
        },
    }


def main() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    command = sys.argv[1]
    if command == "setup":
        print(json.dumps(setup()))
    elif command == "check":
        print(json.dumps(check(json.load(sys.stdin))))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
