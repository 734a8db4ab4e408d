"""Start and stop the server under test the way production runs it.

gunicorn (2 workers x 4 threads) serves `config.wsgi:application`, one Celery worker
(thread pool) processes finalized versions, Postgres holds a database created afresh
for the run and Redis db 11 is the broker. Blobs go to a store inside the run's scratch
directory, so they sit on the same disk as the benchmark's own files.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from .core import BenchError

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
PG_URL = "postgres://postgres@127.0.0.1:5432/{database}"
DATABASE = "modelgate_bench"
BROKER_URL = "redis://127.0.0.1:6379/11"
USERNAME = "bench"
STARTUP_SECONDS = 60
# Access log with the worker pid, so a run can tell which process served each chunk.
ACCESS_FORMAT = '%(h)s "%(r)s" %(s)s %(B)s %(L)ss pid=%(p)s'
GUNICORN_ARGS = ["--config", "config/gunicorn.conf.py", "--workers", "2"]  # gthread, 4 threads
WORKER_ARGS = ["--pool", "threads", "--concurrency", "2", "--loglevel", "WARNING"]
# Recorded with the results: what "the server" meant for these numbers.
SERVER_SETUP = {
    "gunicorn": "config.wsgi:application " + " ".join(GUNICORN_ARGS),
    "celery": "workers.celery worker " + " ".join(WORKER_ARGS),
    "database": f"postgres 127.0.0.1:5432/{DATABASE} (created for the run)",
    "broker": BROKER_URL,
    "settings": "DEBUG=0, store file:// on the scratch directory's disk",
}


@dataclass
class RunningServer:
    base_url: str
    token: str
    gunicorn: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    root: Path
    database: str = DATABASE

    @property
    def gunicorn_pid(self) -> int:
        return self.gunicorn.pid

    def logs(self) -> str:
        return server_logs(self.root)

    @property
    def access_log(self) -> Path:
        return self.root / "access.log"

    def client(self, timeout: float = 600.0) -> httpx.Client:
        """A keep-alive client authenticated with the run's token."""
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=httpx.Timeout(timeout, connect=10.0),
        )

    def pids_serving(self, method: str, path: str) -> Counter[str]:
        """How many `method path` requests each gunicorn worker pid served so far."""
        needle = f'"{method} {path}'
        counts: Counter[str] = Counter()
        for line in self.access_log.read_text(errors="replace").splitlines():
            if needle in line and "pid=" in line:
                counts[line.rsplit("pid=", 1)[1].strip(" <>")] += 1
        return counts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(
    root: Path, database: str = DATABASE, broker_url: str = BROKER_URL
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE"}}
    env.update(
        DATABASE_URL=PG_URL.format(database=database),
        CELERY_BROKER_URL=broker_url,
        MODELGATE_VAR_DIR=str(root / "var"),
        MODELGATE_STORAGE_URL=f"file://{root / 'store'}",
        SECRET_KEY=secrets.token_urlsafe(50),
        DEBUG="0",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    env.pop("REDIS_URL", None)  # throttling cache: per process is fine for a benchmark
    return env


def postgres_version() -> str | None:
    try:
        conn = psycopg.connect(PG_DSN, connect_timeout=5)
    except psycopg.Error:
        return None
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT version()")
            return cursor.fetchone()[0]
    except psycopg.Error:
        return None
    finally:
        conn.close()


def recreate_database(database: str) -> None:
    conn = psycopg.connect(PG_DSN, connect_timeout=5)
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    try:
        with conn.cursor() as cursor:
            # FORCE ends sessions a crashed earlier run may have left behind.
            cursor.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    finally:
        conn.close()


def drop_database(database: str) -> None:
    conn = psycopg.connect(PG_DSN, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
    finally:
        conn.close()


def flush_broker(broker_url: str = BROKER_URL) -> None:
    # Tasks queued by an aborted earlier run name version ids of a dropped database;
    # left in the queue they would be processed against this run's fresh rows.
    import redis

    redis.Redis.from_url(broker_url, socket_timeout=5).flushdb()


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [str(BIN / "python"), "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"manage.py {' '.join(args[:1])} failed:\n{result.stderr[-3000:]}")
    return result.stdout


CREATE_USER = """
from django.contrib.auth.models import User
from registry.models import ModelGrant, RegisteredModel, Team, TeamMembership
user = User.objects.create_user({username!r}, password={password!r})
team = Team.objects.get_or_create(name="default")[0]
TeamMembership.objects.create(team=team, user=user, role="contributor")
# Issue 19: the reader belongs to several teams (each with private and internal models of its
# own) and holds a grant, so every read pays for access checks as a real user's would.
for n, role in enumerate(("viewer", "contributor", "maintainer", "viewer")):
    other = Team.objects.create(name=f"bench-team-{{n}}")
    TeamMembership.objects.create(team=other, user=user, role=role)
    for visibility in ("team", "internal"):
        RegisteredModel.objects.create(name=f"bench-{{n}}-{{visibility}}", team=other,
                                       visibility=visibility)
outside = Team.objects.create(name="bench-outside")
granted = RegisteredModel.objects.create(name="bench-granted", team=outside)
ModelGrant.objects.create(model=granted, user=user, level="read")
"""


def create_user(env: dict[str, str], password: str) -> None:
    manage(env, "shell", "-c", CREATE_USER.format(username=USERNAME, password=password))


def spawn(
    cmd: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        # A session of its own: Ctrl-C reaches only the runner, which then stops the
        # whole process group (master and workers) itself, in order.
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def start_gunicorn(env: dict[str, str], root: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [
        str(BIN / "gunicorn"),
        "config.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        *GUNICORN_ARGS,
        "--access-logfile",
        str(root / "access.log"),
        "--access-logformat",
        ACCESS_FORMAT,
    ]
    return spawn(cmd, env, root / "gunicorn.log")


def start_worker(env: dict[str, str], root: Path) -> subprocess.Popen[bytes]:
    cmd = [
        str(BIN / "celery"),
        "-A",
        "workers.celery",
        "worker",
        *WORKER_ARGS,
        "--hostname",
        f"bench-{os.getpid()}@%h",
    ]
    return spawn(cmd, env, root / "worker.log")


def stop(proc: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """SIGTERM the process group we started, SIGKILL it if it does not leave in time."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def log_tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return f"({path.name}: no log)"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- {path} (last {len(text)} lines)\n" + "\n".join(text)


def server_logs(root: Path, lines: int = 30) -> str:
    return "\n".join(log_tail(root / name, lines) for name in ("gunicorn.log", "worker.log"))


def wait_http_ready(base_url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"gunicorn exited with {proc.returncode}")
        try:
            response = httpx.get(f"{base_url}/readyz", timeout=5)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:300]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise BenchError(f"GET /readyz never answered 200 (last: {last})")


def wait_worker_ready(proc: subprocess.Popen[bytes], broker_url: str = BROKER_URL) -> None:
    # A ping over the broker proves the worker consumes; otherwise the first
    # finalize→ready time would include the worker's start-up.
    from celery import Celery

    app = Celery(broker=broker_url)
    deadline = time.monotonic() + STARTUP_SECONDS
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"celery worker exited with {proc.returncode}")
            if app.control.ping(timeout=1.0):
                return
    finally:
        app.close()
    raise BenchError("the celery worker did not answer a ping")


def create_token(base_url: str, password: str) -> str:
    return create_token_for(base_url, USERNAME, password)


def create_token_for(base_url: str, username: str, password: str) -> str:
    response = httpx.post(
        f"{base_url}/api/v1/auth/tokens/",
        json={"username": username, "password": password, "name": "bench"},
        timeout=30,
    )
    if response.status_code != 201:
        raise BenchError(
            f"POST /api/v1/auth/tokens/ → {response.status_code}: {response.text[:500]}"
        )
    return response.json()["token"]


@contextlib.contextmanager
def run_server(
    root: Path, keep: bool = False, database: str = DATABASE, broker_url: str = BROKER_URL
) -> Iterator[RunningServer]:
    """Migrate a fresh database, start gunicorn and a worker, yield, stop them."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = server_env(root, database, broker_url)
    base_url = f"http://127.0.0.1:{port}"
    password = secrets.token_urlsafe(16)
    print(f"• database {database}: recreating, migrating", file=sys.stderr)
    recreate_database(database)
    flush_broker(broker_url)
    manage(env, "migrate", "--no-input", "-v0")
    create_user(env, password)
    gunicorn = worker = None
    try:
        print(f"• starting gunicorn on {base_url} and a celery worker", file=sys.stderr)
        try:
            gunicorn = start_gunicorn(env, root, port)
            worker = start_worker(env, root)
            wait_http_ready(base_url, gunicorn)
            wait_worker_ready(worker, broker_url)
            token = create_token(base_url, password)
        except BenchError as exc:
            # The logs live in the scratch directory, which is about to be removed.
            exc.add_note(server_logs(root))
            raise
        yield RunningServer(base_url, token, gunicorn, worker, root, database)
    finally:
        print("• stopping gunicorn and the celery worker", file=sys.stderr)
        for proc in (gunicorn, worker):
            if proc is not None:
                stop(proc)
        if not keep:
            with contextlib.suppress(psycopg.Error):
                drop_database(database)
