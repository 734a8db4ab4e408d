"""Registration latency: MLflow's `create_model_version` until the version is READY.

What an MLflow user waits for in `MlflowClient.create_model_version(...)`, which awaits
READY by default, polling `get_model_version` every 3 s while the answer is
PENDING_REGISTRATION. The model: a folder holding `MLmodel` and a pickle of plain data
around 1 MiB of weights as bytes (as numpy arrays pickle), uploaded through the artifact
proxy first (`PUT /api/2.0/mlflow-artifacts/artifacts/...`, not timed). Modelgate
verifies, scans, extracts and packages it before answering READY; MLflow's server
answers READY at once.

Sides, in the same run and with the same client code (a subprocess with the dev venv's
`mlflow`, its own environment per side), COUNT versions each after one warm-up; on
MLflow's server each version comes from a run's artifacts (created first, not timed),
since it refuses an `mlflow-artifacts:` source outside a run:
- Modelgate as `make run` starts it (SQLite, file broker, local store: bench/makerun.py);
- `mlflow server` on its defaults (bench/mlflow_server.py);
- Modelgate on Postgres + Redis (bench/server.py, the run's shared server).
The limit: `get_model_version` through the same client on the same server, the least one
round trip of the MLflow client costs. Goal: Modelgate's p50 under 1 s on both stacks.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

from . import makerun, mlflow_server
from .core import BenchError, Context, MiB, Row
from .server import create_token_for

NAME = "registration"
DESCRIPTION = "MLflow create_model_version → READY, 1 MiB model: make-run server vs mlflow server"
COUNT = 20  # timed registrations per side, after one warm-up
SIZE = 1 * MiB
GOAL_SECONDS = 1.0
MODEL = "bench-registration"

CLIENT = r"""
import json, os, pickle, sys, time
import httpx
from mlflow import MlflowClient

base, folder, count, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with_run = sys.argv[6] == "run"
token = os.environ.get("MLFLOW_TRACKING_TOKEN")
headers = {"Authorization": f"Bearer {token}"} if token else {}
client = MlflowClient(tracking_uri=base, registry_uri=base)
client.create_registered_model(sys.argv[5])
mlmodel = b"flavors:\n  python_function:\n    loader_module: mlflow.pyfunc.model\n"
created, lookups = [], []
with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
    for i in range(count + 1):
        model = {"weights": os.urandom(size), "classes": ["no", "yes"], "version": i}
        weights = pickle.dumps(model, protocol=4)
        run_id, where = None, f"{folder}/{i}"
        if with_run:  # MLflow's server takes an mlflow-artifacts source only inside a run's
            run = client.create_run("0")
            run_id = run.info.run_id
            where = run.info.artifact_uri.removeprefix("mlflow-artifacts:/") + "/model"
        for name, data in (("MLmodel", mlmodel), ("model.pkl", weights)):
            url = f"/api/2.0/mlflow-artifacts/artifacts/{where}/{name}"
            http.put(url, content=data).raise_for_status()
        started = time.perf_counter()
        mv = client.create_model_version(
            sys.argv[5], f"mlflow-artifacts:/{where}", run_id=run_id, await_creation_for=120
        )
        took = time.perf_counter() - started
        started = time.perf_counter()
        status = client.get_model_version(sys.argv[5], mv.version).status
        looked = time.perf_counter() - started
        if status != "READY":
            sys.exit(f"version {mv.version} is {status}")
        if i:  # the first is the warm-up
            created.append(took)
            lookups.append(looked)
print(json.dumps({"created": created, "lookups": lookups, "bytes": len(weights)}))
"""


def log(message: str) -> None:
    print(f"  [{NAME}] {message}", file=sys.stderr, flush=True)


def measure(base_url: str, token: str | None, folder: str, with_run: bool = False) -> dict:
    """COUNT registrations through MlflowClient in a process of its own; `with_run`: each
    from a run's artifacts, as MLflow's server requires (Modelgate serves no runs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    if token:
        env["MLFLOW_TRACKING_TOKEN"] = token
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            CLIENT,
            base_url,
            folder,
            str(COUNT),
            str(SIZE),
            MODEL,
            "run" if with_run else "folder",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=COUNT * 20 + 120,
        check=False,
    )
    if result.returncode:
        raise BenchError(f"MlflowClient against {base_url} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def quantile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _rows(side: str, found: dict, goal: bool) -> list[Row]:
    created, lookups = found["created"], found["lookups"]
    p50, p90 = quantile(created, 50), quantile(created, 90)
    ok = p50 < GOAL_SECONDS if goal else True
    target = f" (goal p50 < {GOAL_SECONDS:g} s)" if goal else ""
    return [
        Row(
            NAME,
            f"create_model_version → READY, {side}",
            seconds=sum(created),
            ok=ok,
            note=f"p50 {p50 * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms, "
            f"max {max(created) * 1000:.0f} ms, {len(created)} versions{target}",
            details={
                "p50_s": round(p50, 4),
                "p90_s": round(p90, 4),
                "max_s": round(max(created), 4),
                "count": len(created),
                "model_bytes": found["bytes"],
            },
        ),
        Row(
            NAME,
            f"get_model_version, {side} (the limit: one client round trip)",
            seconds=sum(lookups),
            note=f"p50 {quantile(lookups, 50) * 1000:.1f} ms, "
            f"p90 {quantile(lookups, 90) * 1000:.1f} ms",
            details={"p50_s": round(quantile(lookups, 50), 5)},
        ),
    ]


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    with makerun.run_stack(ctx.workdir / "registration-make-run") as server:
        token = create_token_for(server.base_url, makerun.USERNAME, server.password)
        log("make-run server (SQLite, file broker)")
        found = measure(server.base_url, token, "bench-registration")
        rows += _rows("make-run server (SQLite, file broker)", found, goal=True)
    if ctx.options.compare_mlflow:
        version = mlflow_server.ensure_venv()
        with mlflow_server.run_default(ctx.workdir / "registration-mlflow") as mlflow:
            log(f"mlflow server {version} (its defaults)")
            found = measure(mlflow.base_url, None, "bench-registration", with_run=True)
            rows += _rows(f"mlflow server {version} (its defaults, SQLite)", found, goal=False)
    log("Modelgate on Postgres + Redis")
    found = measure(ctx.server.base_url, ctx.server.token, "bench-registration")
    rows += _rows("Postgres + Redis", found, goal=True)
    return rows
