"""The peer: `mlflow server` from PyPI, in a virtual environment of its own.

The benchmark creates var/bench/mlflow-venv on first use (`pip install mlflow
psycopg2-binary`, the newest release; its version is recorded with the results) and
reuses it afterwards. The server runs on loopback with `--serve-artifacts` (artifacts in
the run's scratch directory, on the same disk as Modelgate's store) and 2 uvicorn
workers, like Modelgate's 2 gunicorn workers. Backend store: SQLite, or the Postgres
database `mlflow_bench` created afresh.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from .core import BenchError
from .server import PG_URL, drop_database, free_port, log_tail, recreate_database, spawn, stop

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "var" / "bench" / "mlflow-venv"
PG_DATABASE = "mlflow_bench"
WORKERS = 2
STARTUP_SECONDS = 120


@dataclass
class MlflowServer:
    label: str  # "mlflow-sqlite" or "mlflow-postgres"
    base_url: str
    backend_uri: str
    proc: subprocess.Popen[bytes]
    root: Path

    def logs(self) -> str:
        return log_tail(self.root / "mlflow.log")


def python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> str:
    """Create the venv and install mlflow into it if needed; return mlflow's version."""
    if not (VENV / "bin" / "mlflow").exists():
        print(f"• installing mlflow from PyPI into {VENV} (once)", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        result = subprocess.run(
            [str(python()), "-m", "pip", "install", "--quiet", "mlflow", "psycopg2-binary"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BenchError(f"pip install mlflow failed:\n{result.stderr[-3000:]}")
    out = subprocess.run(
        [str(python()), "-c", "import mlflow; print(mlflow.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def wait_ready(base_url: str, proc: subprocess.Popen[bytes], root: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(
                f"mlflow server exited with {proc.returncode}\n{log_tail(root / 'mlflow.log')}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise BenchError(f"mlflow server never answered /health\n{log_tail(root / 'mlflow.log')}")


@contextlib.contextmanager
def run_mlflow(root: Path, backend: str, keep: bool = False) -> Iterator[MlflowServer]:
    """`backend` is "sqlite" or "postgres"; yields a running server, stops it after."""
    root.mkdir(parents=True, exist_ok=True)
    if backend == "sqlite":
        uri = f"sqlite:///{root / 'mlflow.db'}"
    else:
        recreate_database(PG_DATABASE)
        uri = PG_URL.format(database=PG_DATABASE).replace(
            "postgres://", "postgresql+psycopg2://", 1
        )
    port = free_port()
    cmd = [
        str(VENV / "bin" / "mlflow"), "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(WORKERS),
        "--backend-store-uri", uri,
        "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    env = {"PATH": f"{VENV / 'bin'}:/usr/bin:/bin", "HOME": str(root), "PYTHONUNBUFFERED": "1"}
    print(f"• starting mlflow server ({backend}) on port {port}", file=sys.stderr, flush=True)
    proc = spawn(cmd, env, root / "mlflow.log")
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_ready(base_url, proc, root)
        yield MlflowServer(f"mlflow-{backend}", base_url, uri, proc, root)
    finally:
        stop(proc)
        if backend == "postgres" and not keep:
            with contextlib.suppress(Exception):
                drop_database(PG_DATABASE)


@contextlib.contextmanager
def run_default(root: Path) -> Iterator[MlflowServer]:
    """`mlflow server` as its docs start it: no flags but the port, run in `root`, so its
    default backend store (`sqlite:///mlflow.db`), artifact root and workers (4) apply."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [str(VENV / "bin" / "mlflow"), "server", "--port", str(port)]
    env = {"PATH": f"{VENV / 'bin'}:/usr/bin:/bin", "HOME": str(root), "PYTHONUNBUFFERED": "1"}
    print(f"• starting mlflow server (its defaults) on port {port}", file=sys.stderr, flush=True)
    proc = spawn(cmd, env, root / "mlflow.log", cwd=root)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_ready(base_url, proc, root)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        yield MlflowServer("mlflow-default", base_url, uri, proc, root)
    finally:
        stop(proc)


# Bulk seeding through MLflow's own store schema (its SQLAlchemy tables), not the REST
# API: 10,000 REST creates would take minutes and measure nothing of interest here.
SEED = r"""
import sys, time
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
from mlflow.store.model_registry.dbmodels.models import (
    SqlModelVersion, SqlModelVersionTag, SqlRegisteredModel, SqlRegisteredModelAlias)
uri, models, per_model = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = SqlAlchemyStore(uri)
now = int(time.time() * 1000)
with store.engine.begin() as conn:
    conn.execute(SqlRegisteredModel.__table__.insert(),
        [{"name": f"m-{m:04d}", "creation_time": now, "last_updated_time": now}
         for m in range(models)])
    for m in range(models):
        name = f"m-{m:04d}"
        conn.execute(SqlModelVersion.__table__.insert(), [
            {"name": name, "version": v, "creation_time": now + v, "last_updated_time": now,
             "source": f"mlflow-artifacts:/seed/{name}/{v}", "status": "READY",
             "current_stage": "None"} for v in range(1, per_model + 1)])
        conn.execute(SqlModelVersionTag.__table__.insert(), [
            {"name": name, "version": v, "key": "team", "value": f"t{v % 10}"}
            for v in range(1, per_model + 1)])
        conn.execute(SqlRegisteredModelAlias.__table__.insert(),
            [{"name": name, "alias": "champion", "version": 1}])
print("seeded")
"""


def seed(server: MlflowServer, models: int, per_model: int) -> None:
    result = subprocess.run(
        [str(python()), "-c", SEED, server.backend_uri, str(models), str(per_model)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"seeding {server.label} failed:\n{result.stderr[-3000:]}")
