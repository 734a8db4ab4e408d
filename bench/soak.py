"""`make soak`: mixed load from several processes while the worker dies twice, then checks.

    make soak                 # 10 minutes, 4 load processes
    make soak MINUTES=2 SOAK_ARGS="--processes 2"

Each load process owns a model and, until the time is up, picks at random: upload a
version (one or two files, sometimes sent in two `Content-Range` chunks) and finalize it,
while fewer than MAX_PROCESSING of its versions are still processing (else it reads);
move the unprotected alias `candidate`; request a promotion to the `soak-staging`
environment and approve it as a reviewer; or read (a version by `@alias`, the list, a
file download checked against the sha256 it uploaded). Any 5xx or unexpected status is
an error. Meanwhile the controller SIGKILLs the Celery worker at 1/3 and 2/3 of the time
and starts a new one a few seconds later.

Then it waits for the work to drain and checks, through the ORM and the blob store:
every stored blob's sha256 and size match its record; every finalized version is `ready`
or `failed` with a reason; no promotion is left pending/approved/promoting and each
environment alias points at its last promoted version; version numbers have no gaps; and
the audit log holds every event the work implies (created, finalized, ready/failed,
requested, promoted + alias.moved, one alias.moved per alias move a client made).

`make soak` runs all of it on a database of its own (`modelgate_soak`), a private
redis-server, gunicorn and a worker; tests/test_soak.py runs a 1-minute version on the
test database with tests/processes.py's helpers.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ENVIRONMENT = "soak-staging"
ALIAS = "candidate"
OPEN_PROMOTIONS = ("pending", "approved", "promoting")
# A load process uploads while fewer of its versions than this are still processing, as a
# pipeline that waits for its pushes does: the backlog stays what the workers can drain.
MAX_PROCESSING = 4


# --- The load (runs in child processes: no Django here) ---------------------------------
@dataclass
class LoadResult:
    model: str
    counts: Counter = field(default_factory=Counter)
    alias_moves: int = 0  # PUTs that changed where `candidate` points
    promotions: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Load:
    def __init__(self, base_url: str, author: str, reviewer: str, model: str, seed: int):
        self.api = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {author}"}, timeout=60
        )
        self.reviewer = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {reviewer}"}, timeout=60
        )
        self.random = random.Random(seed)
        self.result = LoadResult(model)
        self.files: dict[int, dict[str, str]] = {}  # version -> {path: sha256}
        self.alias_at: int | None = None

    def check(self, response: httpx.Response, *ok: int) -> bool:
        if response.status_code in ok:
            return True
        request = response.request
        self.result.errors.append(
            f"{request.method} {request.url.path} → {response.status_code}: {response.text[:300]}"
        )
        return False

    def versions_url(self, suffix: str = "") -> str:
        return f"/api/v1/models/{self.result.model}/versions/{suffix}"

    def upload(self) -> None:
        if self.processing() >= MAX_PROCESSING:
            self.read()
            return
        blobs = {
            f"weights-{i}.bin": self.random.randbytes(self.random.randint(1, 512 * 1024))
            for i in range(self.random.randint(1, 2))
        }
        files = [
            {"path": p, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()}
            for p, b in blobs.items()
        ]
        response = self.api.post(self.versions_url(), json={"files": files})
        if not self.check(response, 201):
            return
        number = response.json()["version"]
        for path, data in blobs.items():
            url = self.versions_url(f"{number}/files/{path}")
            cut = len(data) // 2 if len(data) > 1 and self.random.random() < 0.3 else 0
            pieces = [(0, data[:cut]), (cut, data[cut:])] if cut else [(0, data)]
            for start, piece in pieces:
                headers = {"Content-Type": "application/octet-stream"}
                if cut:
                    end = start + len(piece) - 1
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                if not self.check(self.api.put(url, content=piece, headers=headers), 200):
                    return
        if self.check(self.api.post(self.versions_url(f"{number}/finalize/")), 200):
            self.files[number] = {f["path"]: f["sha256"] for f in files}
            self.result.counts["upload"] += 1

    def processing(self) -> int:
        response = self.api.get(self.versions_url(f"?state=processing&page_size={MAX_PROCESSING}"))
        return len(response.json()["results"]) if self.check(response, 200) else MAX_PROCESSING

    def ready_versions(self) -> list[int]:
        response = self.api.get(self.versions_url("?state=ready&page_size=20"))
        if not self.check(response, 200):
            return []
        return [v["version"] for v in response.json()["results"]]

    def move_alias(self) -> None:
        ready = self.ready_versions()
        if not ready:
            return
        number = self.random.choice(ready)
        url = f"/api/v1/models/{self.result.model}/aliases/{ALIAS}/"
        if self.check(self.api.put(url, json={"version": number}), 200, 201):
            self.result.alias_moves += number != self.alias_at
            self.alias_at = number
            self.result.counts["alias"] += 1

    def promote(self) -> None:
        ready = self.ready_versions()
        if not ready:
            return
        number = self.random.choice(ready)
        response = self.api.post(
            self.versions_url(f"{number}/promotions/"), json={"environment": ENVIRONMENT}
        )
        if response.status_code == 409:  # this version already has an open promotion
            return
        if not self.check(response, 201):
            return
        promotion = response.json()
        self.result.promotions.append(promotion["id"])
        self.result.counts["promotion"] += 1
        if promotion["state"] == "pending":
            review = self.reviewer.post(
                f"/api/v1/promotions/{promotion['id']}/reviews/",
                json={"decision": "approve", "comment": "soak"},
            )
            self.check(review, 200, 201)

    def read(self) -> None:
        self.result.counts["read"] += 1
        self.check(self.api.get(self.versions_url("?page_size=50")), 200)
        if self.alias_at is not None:
            self.check(self.api.get(self.versions_url(f"@{ALIAS}/")), 200)
        ready = [n for n in self.ready_versions() if n in self.files]
        if not ready:
            return
        number = self.random.choice(ready)
        path, digest = self.random.choice(sorted(self.files[number].items()))
        response = self.api.get(self.versions_url(f"{number}/files/{path}"))
        if self.check(response, 200) and hashlib.sha256(response.content).hexdigest() != digest:
            self.result.errors.append(f"download of {number}/{path}: sha256 differs")

    def run(self, seconds: float) -> LoadResult:
        if not self.check(self.api.post("/api/v1/models/", json={"name": self.result.model}), 201):
            return self.result
        deadline = time.monotonic() + seconds
        # Reads dominate, as they do in production; uploads wait for processing (above).
        actions = [(self.upload, 15), (self.move_alias, 15), (self.promote, 10), (self.read, 60)]
        while time.monotonic() < deadline and len(self.result.errors) < 20:
            action = self.random.choices([a for a, _ in actions], [w for _, w in actions])[0]
            try:
                action()
            except httpx.HTTPError as exc:
                self.result.errors.append(f"{action.__name__}: {exc!r}")
        return self.result


def _load_main(args: tuple[str, str, str, str, int, float]) -> dict[str, Any]:
    base_url, author, reviewer, model, seed, seconds = args
    result = Load(base_url, author, reviewer, model, seed).run(seconds)
    return {**result.__dict__, "counts": dict(result.counts)}


# --- The controller --------------------------------------------------------------------
@dataclass
class Soak:
    base_url: str
    author_token: str
    reviewer_token: str
    kill_worker: Callable[[], None]
    start_worker: Callable[[], None]
    seconds: float
    processes: int = 4
    prefix: str = "soak"
    worker_restarts: list[float] = field(default_factory=list)

    def run(self) -> list[dict[str, Any]]:
        jobs = [
            (self.base_url, self.author_token, self.reviewer_token, f"{self.prefix}-{i}", i,
             self.seconds)
            for i in range(self.processes)
        ]  # fmt: skip
        # spawn: the children must not inherit the parent's database connections.
        context = multiprocessing.get_context("spawn")
        started = time.monotonic()
        with context.Pool(self.processes) as pool:
            pending = pool.map_async(_load_main, jobs)
            for fraction in (1 / 3, 2 / 3):
                time.sleep(max(0.0, started + self.seconds * fraction - time.monotonic()))
                self.kill_worker()
                time.sleep(min(5.0, self.seconds / 20))
                self.start_worker()
                self.worker_restarts.append(round(time.monotonic() - started, 1))
                log(f"worker killed and restarted at {self.worker_restarts[-1]}s")
            return pending.get(timeout=self.seconds + 600)


def log(message: str) -> None:
    print(f"  [soak] {message}", file=sys.stderr, flush=True)


# --- The checks (need Django, set up against the soak's database) ------------------------
def drain(models: list[str], stall: float = 120.0) -> None:
    """Wait until no version is processing and no promotion is open, for as long as the
    worker keeps making progress (a backlog is fine; a stall of `stall` seconds is not)."""
    from registry.models import ModelVersion, Promotion

    last, moved_at = None, time.monotonic()
    while time.monotonic() - moved_at < stall:
        busy = ModelVersion.objects.filter(model__name__in=models, state="processing").count()
        open_ = Promotion.objects.filter(
            model__name__in=models, state__in=("approved", "promoting")
        ).count()
        if not busy and not open_:
            return
        if (busy, open_) != last:
            last, moved_at = (busy, open_), time.monotonic()
            log(f"draining: {busy} versions processing, {open_} promotions open")
        time.sleep(1)
    log(f"no progress for {stall:.0f}s: {busy} versions processing, {open_} promotions open")


def check_invariants(results: list[dict[str, Any]]) -> list[str]:
    """Every problem found, as sentences; empty when everything holds."""
    from registry.models import Alias, Event, ModelVersion, Promotion, VersionFile
    from registry.storage import get_store

    problems = [f"{r['model']}: {e}" for r in results for e in r["errors"]]
    models = [r["model"] for r in results]
    store = get_store()

    for record in VersionFile.objects.filter(version__model__name__in=models, complete=True):
        hasher, size = hashlib.sha256(), 0
        for data in store.iter_bytes(record.sha256):
            hasher.update(data)
            size += len(data)
        if (hasher.hexdigest(), size) != (record.sha256, record.size):
            problems.append(f"blob of {record.version}/{record.path} does not match its record")

    versions = ModelVersion.objects.filter(model__name__in=models).select_related("model")
    events = Counter(
        (e.type, e.model_name, e.version_number)
        for e in Event.objects.filter(model_name__in=models)
    )
    by_model: dict[str, list[int]] = {}
    for version in versions:
        key = (version.model.name, version.number)
        by_model.setdefault(version.model.name, []).append(version.number)
        if version.state not in ("uploading", "ready", "failed"):
            problems.append(f"{version} is {version.state} after the drain")
        if version.state == "failed" and not version.status_reason:
            problems.append(f"{version} failed without a reason")
        expected = ["version.created"]
        if version.state != "uploading":
            expected.append("version.finalized")
        if version.state in ("ready", "failed"):
            expected.append(f"version.{version.state}")
        problems += [f"{version}: no {t} event" for t in expected if not events[(t, *key)]]
    for model, numbers in by_model.items():
        if sorted(numbers) != list(range(1, len(numbers) + 1)):
            problems.append(f"{model}: version numbers have gaps: {sorted(numbers)}")

    promotion_events = Counter(
        (e.type, e.data.get("promotion"))
        for e in Event.objects.filter(model_name__in=models, type__startswith="promotion.")
    )
    moved_by_promotion = Counter(
        e.data.get("promotion")
        for e in Event.objects.filter(model_name__in=models, type="alias.moved")
    )
    promotions = Promotion.objects.filter(model__name__in=models).select_related("version")
    for promotion in promotions:
        if promotion.state in OPEN_PROMOTIONS:
            problems.append(f"promotion {promotion.pk} stuck in {promotion.state}")
        if not promotion_events[("promotion.requested", promotion.pk)]:
            problems.append(f"promotion {promotion.pk}: no promotion.requested event")
        if (
            promotion.state not in OPEN_PROMOTIONS
            and not promotion_events[(f"promotion.{promotion.state}", promotion.pk)]
        ):
            problems.append(f"promotion {promotion.pk}: no promotion.{promotion.state} event")
        if promotion.state == "promoted" and moved_by_promotion[promotion.pk] != 1:
            problems.append(f"promotion {promotion.pk}: {moved_by_promotion[promotion.pk]} moves")
    requested = sum(len(r["promotions"]) for r in results)
    if requested != promotions.count():
        problems.append(
            f"clients got {requested} promotions, the database has {promotions.count()}"
        )

    for result in results:
        model = result["model"]
        last = promotions.filter(model__name=model, state="promoted").order_by("-sequence").first()
        live = Alias.objects.filter(model__name=model, name=ENVIRONMENT).first()
        if (live and live.version_id) != (last and last.version_id):
            problems.append(f"{model}: {ENVIRONMENT} does not point at its last promotion")
        moves = Event.objects.filter(
            model_name=model, type="alias.moved", data__alias=ALIAS
        ).count()
        if moves != result["alias_moves"]:
            problems.append(
                f"{model}: {moves} alias.moved events, clients moved it "
                f"{result['alias_moves']} times"
            )
    return problems


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    from registry.models import ModelVersion, Promotion

    models = [r["model"] for r in results]
    totals = Counter()
    for result in results:
        totals.update(result["counts"])
    return {
        "operations": dict(totals),
        "alias_moves": sum(r["alias_moves"] for r in results),
        "versions": dict(
            Counter(
                ModelVersion.objects.filter(model__name__in=models).values_list("state", flat=True)
            )
        ),
        "promotions": dict(
            Counter(
                Promotion.objects.filter(model__name__in=models).values_list("state", flat=True)
            )
        ),
    }


# --- `make soak`: a stack of its own ------------------------------------------------------
SOAK_DATABASE = "modelgate_soak"
FAST_JOBS = {
    "MODELGATE_JOB_LEASE_SECONDS": "3",
    "MODELGATE_RECONCILE_SECONDS": "1",
    "MODELGATE_JOB_RESEND_SECONDS": "2",
}


def setup_people() -> tuple[str, str]:
    """An author, a reviewer and the environment; returns their two API tokens."""
    from django.contrib.auth.models import Group, User

    from registry.models import Environment, Team, TeamMembership
    from registry.services.tokens import create_token

    team = Team.objects.get_or_create(name="default")[0]
    author = User.objects.create_user("soak-author", password=os.urandom(8).hex())
    TeamMembership.objects.create(team=team, user=author, role="contributor")
    reviewer = User.objects.create_user("soak-reviewer", password=os.urandom(8).hex())
    reviewer.groups.add(Group.objects.get_or_create(name="reviewers")[0])
    TeamMembership.objects.create(team=team, user=reviewer, role="viewer")
    Environment.objects.get_or_create(
        name=ENVIRONMENT,
        defaults={"required_approvals": 1, "reviewer_group": "reviewers", "gates": []},
    )
    return create_token(author, "soak")[1], create_token(reviewer, "soak")[1]


def main(argv: list[str] | None = None) -> int:
    import argparse
    import contextlib
    import subprocess
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench import server as bs

    parser = argparse.ArgumentParser(description="Mixed load while the worker dies twice.")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="soak-", dir=bs.ROOT / "var"))
    redis_port = bs.free_port()
    broker = f"redis://127.0.0.1:{redis_port}/0"
    env = {**bs.server_env(root, SOAK_DATABASE, broker), **FAST_JOBS}
    env["MODELGATE_GIT_DIR"] = str(root / "git")
    os.environ.update(env, DJANGO_SETTINGS_MODULE="config.settings")
    redis = bs.spawn(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(root)],
        env, root / "redis.log",
    )  # fmt: skip
    web = worker = None
    try:
        log(f"database {SOAK_DATABASE}: recreating, migrating")
        bs.recreate_database(SOAK_DATABASE)
        bs.manage(env, "migrate", "--no-input", "-v0")
        import django

        django.setup()
        author, reviewer = setup_people()
        port = bs.free_port()
        web = bs.start_gunicorn(env, root, port)
        base_url = f"http://127.0.0.1:{port}"
        bs.wait_http_ready(base_url, web)

        def start() -> None:
            nonlocal worker
            worker = bs.spawn(
                [str(bs.BIN / "celery"), "-A", "workers.celery", "worker", "--beat",
                 "--schedule", str(root / "beat"), "--pool", "threads", "--concurrency", "2",
                 "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
                 "--hostname", f"soak-{time.monotonic_ns()}@%h"],
                env, root / "worker.log",
            )  # fmt: skip

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, 9)
            worker.wait()

        start()
        soak = Soak(base_url, author, reviewer, kill, start, args.minutes * 60, args.processes)
        log(f"{args.processes} load processes for {args.minutes:g} min on {base_url}")
        results = soak.run()
        log("load done; waiting for the work to drain")
        drain([r["model"] for r in results])
        problems = check_invariants(results)
        print(json.dumps({"worker_restarts_at_s": soak.worker_restarts, **summary(results)}))
        for problem in problems:
            print(f"✗ {problem}")
        print("soak: every invariant holds" if not problems else f"soak: {len(problems)} problems")
        return 1 if problems else 0
    finally:
        for proc in (web, worker, redis):
            if proc is not None:
                bs.stop(proc)
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
            bs.drop_database(SOAK_DATABASE)
        subprocess.run(["rm", "-rf", str(root)], check=False)


if __name__ == "__main__":
    sys.exit(main())
