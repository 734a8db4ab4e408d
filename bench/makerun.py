"""Resolve an alias on the server `make run` starts, beside `mlflow server` on its defaults.

Both sides run as a newcomer starts them, on one SQLite file each:

- Modelgate: `deploy/run_local.py` with its defaults (gunicorn 2 workers x 4 threads,
  a Celery worker and beat, SQLite, local blob store, file broker) from the runtime-only
  venv `.venv-run` (built as the Makefile builds it when missing), after `migrate` and
  `collectstatic` as `make run` does, in a scratch var directory. 4 models get 5 versions
  each (multipart uploads the worker makes ready) and the alias `champion`, via the API.
- MLflow: `mlflow server --port P` in a scratch directory (default backend store
  `sqlite:///mlflow.db`, 4 workers), the same models, versions and alias via its REST API.

Both run side by side; after a warm-up, 8 client threads resolve the alias, each request
on a fresh TCP connection (a fleet of short-lived clients), the two servers taking turns
(ROUNDS passes of `--preset`'s API seconds each), with the same client code (bench/api.py's
`measure`) for both: `GET /api/v1/models/<m>/versions/@champion/` and
`GET /api/2.0/mlflow/registered-models/alias?name=<m>&alias=champion`. The limit is
`/healthz` (`/health` for MLflow) of the same server, same client, fresh connections.
Goal: Modelgate >= 2x MLflow's ops/s, no error, no "database is locked" in any log.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from . import mlflow_server
from .api import Op, Stats, measure
from .core import BenchError, Context, Row
from .server import create_token_for, free_port, log_tail, spawn, stop
from .usage import bench_cpu, tree_cpu

NAME = "make-run"
ROOT = Path(__file__).resolve().parent.parent
RUN_VENV = ROOT / ".venv-run"
MODELS, VERSIONS = 4, 5
CONCURRENCY = 8
USERNAME = "bench"
LOCKED = "database is locked"
GOAL_RATIO = 2.0
START_SECONDS = 240  # load_demo trains and uploads the demo models first
READY_SECONDS = 120
ROUNDS = 3  # passes per side, taking turns
WARM_SECONDS = 3.0


def log(message: str) -> None:
    print(f"  [{NAME}] {message}", file=sys.stderr, flush=True)


# --- the runtime venv, as the Makefile builds it ---------------------------------------
def runtime_python() -> Path:
    """`.venv-run`'s python, (re)installed as `make run` would when its stamp is missing."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]
    stamp = RUN_VENV / f".installed-{digest}"
    python = RUN_VENV / "bin" / "python"
    if not stamp.exists():
        log(f"building {RUN_VENV} as the Makefile does (runtime dependencies only)")
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(RUN_VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        for args in (["--upgrade", "pip", "setuptools", "wheel"], ["-e", "."]):
            result = subprocess.run(
                [*pip, *args], cwd=ROOT, capture_output=True, text=True, check=False
            )
            if result.returncode:
                raise BenchError(f"pip install {' '.join(args)} failed:\n{result.stderr[-3000:]}")
        for old in RUN_VENV.glob(".installed-*"):
            old.unlink()
        stamp.touch()
    return python


# --- the stack `make run` starts ---------------------------------------------------------
@dataclass
class MakeRunServer:
    base_url: str
    supervisor: subprocess.Popen[bytes]
    root: Path
    password: str

    @property
    def var(self) -> Path:
        return self.root / "var"

    def log_paths(self) -> list[Path]:
        return [self.root / "run.log", self.var / "worker.log", self.var / "beat.log"]

    def logs(self) -> str:
        return "\n".join(log_tail(path) for path in self.log_paths())


def stack_env(root: Path) -> dict[str, str]:
    """The environment of a newcomer's shell: none of the bench's or the tests' settings."""
    drop = {"DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE",
            "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "CI", "VIRTUAL_ENV", "PYTHONPATH"}  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("MODELGATE_")}
    env.update(MODELGATE_VAR_DIR=str(root / "var"), PYTHONUNBUFFERED="1")
    return env


CREATE_USER = """
from django.contrib.auth.models import User
from registry.models import Team, TeamMembership
user = User.objects.create_user({username!r}, password={password!r})
team = Team.objects.get_or_create(name="default")[0]
TeamMembership.objects.create(team=team, user=user, role="contributor")
"""


def _manage(python: Path, env: dict[str, str], *args: str) -> None:
    result = subprocess.run(
        [str(python), "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise BenchError(f"manage.py {args[0]} failed:\n{result.stderr[-3000:]}")


@contextlib.contextmanager
def run_stack(root: Path) -> Iterator[MakeRunServer]:
    """`make run`'s commands, in order, on a scratch var directory; stopped as Ctrl-C does."""
    python = runtime_python()
    root.mkdir(parents=True, exist_ok=True)
    env = stack_env(root)
    password = secrets.token_urlsafe(16)
    _manage(python, env, "migrate", "--no-input", "-v0")
    _manage(python, env, "collectstatic", "--no-input", "-v0")
    _manage(python, env, "shell", "-c", CREATE_USER.format(username=USERNAME, password=password))
    port = free_port()
    cmd = [str(python), "deploy/run_local.py", "--host", "127.0.0.1", "--port", str(port),
           "--web-workers", "2"]  # fmt: skip
    log(f"starting deploy/run_local.py on port {port} (SQLite in {root / 'var'})")
    supervisor = spawn(cmd, env, root / "run.log")
    server = MakeRunServer(f"http://127.0.0.1:{port}", supervisor, root, password)
    try:
        deadline = time.monotonic() + START_SECONDS
        while "Modelgate is serving" not in (root / "run.log").read_text(errors="replace"):
            if supervisor.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"make run's stack did not come up\n{server.logs()}")
            time.sleep(0.3)
        yield server
    finally:
        stop(supervisor, grace=45)  # SIGTERM: the supervisor stops gunicorn, worker, beat


def seed_modelgate(server: MakeRunServer) -> dict[str, str]:
    """MODELS x VERSIONS ready versions and `champion` on the last; the token's headers."""
    token = create_token_for(server.base_url, USERNAME, server.password)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as api:
        for m in range(MODELS):
            api.post("/api/v1/models/", json={"name": f"alias-{m}"}).raise_for_status()
            for v in range(VERSIONS):
                files = {"files": ("README.md", f"# alias-{m} v{v + 1}\n".encode())}
                api.post(f"/api/v1/models/alias-{m}/versions/", files=files).raise_for_status()
        deadline = time.monotonic() + READY_SECONDS
        for m in range(MODELS):
            while True:
                page = api.get(f"/api/v1/models/alias-{m}/versions/", params={"state": "ready"})
                if len(page.raise_for_status().json()["results"]) == VERSIONS:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"alias-{m}'s versions never got ready\n{server.logs()}")
                time.sleep(0.2)
            moved = api.put(f"/api/v1/models/alias-{m}/aliases/champion/", json={"version": 5})
            moved.raise_for_status()
    return headers


def seed_mlflow(base_url: str) -> None:
    api = f"{base_url}/api/2.0/mlflow"
    with httpx.Client(timeout=60) as client:
        for m in range(MODELS):
            name = f"alias-{m}"
            client.post(f"{api}/registered-models/create", json={"name": name}).raise_for_status()
            for v in range(VERSIONS):
                body = {"name": name, "source": f"s3://bench-bucket/{name}/{v + 1}"}
                created = client.post(f"{api}/model-versions/create", json=body)
                if created.status_code != 200:
                    raise BenchError(f"MLflow: {created.status_code} {created.text[:300]}")
            body = {"name": name, "alias": "champion", "version": str(VERSIONS)}
            client.post(f"{api}/registered-models/alias", json=body).raise_for_status()


# --- the measurement ---------------------------------------------------------------------
MODELGATE_RESOLVE = Op(
    "resolve", lambda i: ("GET", f"/api/v1/models/alias-{i % MODELS}/versions/@champion/", None)
)
HEALTHZ = Op("healthz", lambda i: ("GET", "/healthz", None))
MLFLOW_HEALTH = Op("health", lambda i: ("GET", "/health", None))
MLFLOW_RESOLVE = Op(
    "resolve",
    lambda i: (
        "GET",
        f"/api/2.0/mlflow/registered-models/alias?name=alias-{i % MODELS}&alias=champion",
        None,
    ),
)


@dataclass
class Pass:
    stats: Stats
    server_cpu: float
    bench_cpu: float

    def __add__(self, other: Pass) -> Pass:
        a, b = self.stats, other.stats
        stats = Stats(a.requests + b.requests, a.seconds + b.seconds,
                      a.latencies + b.latencies, a.errors + b.errors)  # fmt: skip
        return Pass(stats, self.server_cpu + other.server_cpu, self.bench_cpu + other.bench_cpu)


def fresh(base_url: str, headers: dict[str, str], op: Op, pid: int, seconds: float) -> Pass:
    """`op` at concurrency 8, a new TCP connection per request, for `seconds`."""
    cpu, mine = tree_cpu(pid), bench_cpu()
    stats = measure(base_url, headers, op, CONCURRENCY, False, seconds, 10**9)
    return Pass(stats, tree_cpu(pid) - cpu, bench_cpu() - mine)


def locked_lines(paths: list[Path]) -> list[str]:
    found = []
    for path in paths:
        if path.exists():
            text = path.read_text(errors="replace")
            found += [f"{path.name}: {line[:200]}" for line in text.splitlines() if LOCKED in line]
    return found


def _row(operation: str, result: Pass, extra: str = "", ok: bool = True) -> Row:
    s = result.stats
    note = (
        f"{s.ops_s:,.0f} ops/s, p50 {s.quantile_ms(50):.1f} ms, p99 {s.quantile_ms(99):.1f} ms, "
        f"{s.requests:,} requests, {len(s.errors)} errors{extra}"
    )
    return Row(
        NAME,
        operation,
        seconds=s.seconds,
        server_cpu_seconds=result.server_cpu,
        bench_cpu_seconds=result.bench_cpu,
        ok=ok and not s.errors,
        note=note,
        details={
            "ops_s": round(s.ops_s, 1),
            "requests": s.requests,
            "errors": len(s.errors),
            "first_errors": s.errors[:3],
            "p50_ms": round(s.quantile_ms(50), 2),
            "p99_ms": round(s.quantile_ms(99), 2),
            "concurrency": CONCURRENCY,
            "connection": "fresh",
        },
    )


def run(ctx: Context) -> list[Row]:
    seconds = max(ctx.options.api_seconds, 2.0)
    version = mlflow_server.ensure_venv()
    with (
        run_stack(ctx.workdir / "make-run") as server,
        mlflow_server.run_default(ctx.workdir / "mlflow-default") as mlflow,
    ):
        headers = seed_modelgate(server)
        seed_mlflow(mlflow.base_url)
        sides = [  # (base URL, headers, the resolve, the limit, the pid of its process tree)
            (server.base_url, headers, MODELGATE_RESOLVE, HEALTHZ, server.supervisor.pid),
            (mlflow.base_url, {}, MLFLOW_RESOLVE, MLFLOW_HEALTH, mlflow.proc.pid),
        ]
        for base_url, headers, op, limit_op, _ in sides:
            # Warm-up at full concurrency, so that every worker of both has loaded its code.
            measure(base_url, headers, op, CONCURRENCY, False, WARM_SECONDS, 10**9)
            measure(base_url, {}, limit_op, CONCURRENCY, False, WARM_SECONDS / 2, 10**9)
        passes: list[list[Pass]] = [[], [], [], []]
        # Taking turns, so that a neighbour's load on the machine falls on both sides.
        for turn in range(ROUNDS):
            for side, (base_url, headers, op, limit_op, pid) in enumerate(sides):
                passes[side].append(fresh(base_url, headers, op, pid, seconds))
                passes[2 + side].append(fresh(base_url, {}, limit_op, pid, seconds))
            log(
                f"round {turn + 1}/{ROUNDS}: resolve "
                + ", ".join(f"{p[-1].stats.ops_s:.0f}" for p in passes[:2])
                + " ops/s (ours, MLflow)"
            )
    ours, theirs, limit, their_limit = (sum(p[1:], p[0]) for p in passes)
    our_locked = locked_lines(server.log_paths())
    their_locked = locked_lines([mlflow.root / "mlflow.log"])

    ratio = ours.stats.ops_s / theirs.stats.ops_s if theirs.stats.ops_s else 0.0
    errors = len(ours.stats.errors) + len(theirs.stats.errors)
    c = f"c={CONCURRENCY}, fresh connections"
    rows = [
        _row(f"resolve alias, make-run server (SQLite), {c}", ours,
             f"; '{LOCKED}' in its logs: {len(our_locked)}", ok=not our_locked),
        _row(f"resolve alias, mlflow server {version} (its defaults, SQLite), {c}", theirs,
             f"; '{LOCKED}' in its log: {len(their_locked)}"),
        _row(f"/healthz, make-run server, {c} (the limit)", limit),
        _row(f"/health, mlflow server, {c} (its limit)", their_limit),
        Row(
            NAME,
            f"resolve alias, make-run server / mlflow server, {c}",
            ok=ratio >= GOAL_RATIO and errors == 0 and not our_locked,
            note=(
                f"{ratio:.1f}x MLflow's ops/s (goal >= {GOAL_RATIO:g}x); "
                f"{ours.stats.ops_s / max(limit.stats.ops_s, 1e-9):.0%} of the limit (/healthz); "
                f"errors {len(ours.stats.errors)}/{len(theirs.stats.errors)}; "
                f"'{LOCKED}': {'none' if not our_locked else our_locked[0]}"
            ),
            details={"ratio": round(ratio, 2), "limit_ops_s": round(limit.stats.ops_s, 1),
                     "mlflow_version": version, "locked_lines": our_locked[:5],
                     "mlflow_locked_lines": their_locked[:5]},
        ),
    ]  # fmt: skip
    return rows
