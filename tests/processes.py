"""Real processes for tests that cross them: Redis, gunicorn web nodes, Celery workers.

Each runs against the test database the run is using, so the test can look at the result
through the ORM while the processes do the work.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def base_env(broker_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        {
            "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": broker_url,
            "MODELGATE_STORAGE_URL": settings.MODELGATE_STORAGE_URL,
            "MODELGATE_GIT_DIR": str(settings.MODELGATE_GIT_DIR),
            "MODELGATE_WEBHOOK_ALLOW_PRIVATE": "1"
            if settings.MODELGATE_WEBHOOK_ALLOW_PRIVATE
            else "0",
            "SECRET_KEY": settings.SECRET_KEY,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            # A beat killed by a test is replaced by another's within seconds, not 30.
            "MODELGATE_BEAT_LOCK_SECONDS": "3",
        }
    )
    env.update(extra)
    return env


class Process:
    def __init__(self, args: list[str], env: dict[str, str], log: Path, cwd: Path | None = None):
        self.args, self.env, self.log_path = args, env, log
        self.cwd = cwd or ROOT
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Process":
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            cwd=self.cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if getattr(self, "log", None):
            self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]


class Redis(Process):
    def __init__(self, tmp: Path, port: int | None = None):
        self.port = port or free_port()
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        super().__init__(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp),
            ],
            dict(os.environ),
            tmp / f"redis-{self.port}.log",
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "Redis":
        super().start()
        wait_until(self.ping, 15, "redis to answer")
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class Web(Process):
    """gunicorn with config/gunicorn.conf.py; `bin` is the venv's bin directory to run it
    from (the test venv's by default; tests/test_runtime_only.py passes a runtime-only one)."""

    def __init__(
        self,
        env: dict[str, str],
        tmp: Path,
        workers: int = 2,
        cwd: Path | None = None,
        bin: Path = BIN,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            [
                str(bin / "gunicorn"),
                "config.wsgi:application",
                "--config",
                str(ROOT / "config" / "gunicorn.conf.py"),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(workers),
                "--timeout",
                "300",
            ],
            env,
            tmp / f"web-{self.port}.log",
            cwd,
        )

    def start(self) -> "Web":
        super().start()
        wait_until(self.healthy, 60, f"gunicorn on {self.port}", self)
        return self

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


class Worker(Process):
    def __init__(
        self,
        env: dict[str, str],
        tmp: Path,
        name: str,
        beat: bool = False,
        cwd: Path | None = None,
        bin: Path = BIN,
        queues: tuple[str, ...] = (),
    ):
        args = [
            str(bin / "celery"),
            "-A",
            "workers.celery",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            "2",
            "--loglevel",
            "INFO",
            "--hostname",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
        if queues:  # none: every queue in CELERY_TASK_QUEUES
            args += ["--queues", ",".join(queues)]
        if beat:
            args += ["--beat", "--schedule", str(tmp / f"beat-{name}")]
        super().__init__(args, env, tmp / f"worker-{name}.log", cwd)


class MotoServer(Process):
    """A local S3-compatible server (moto) in its own process, for the S3 backend's tests."""

    def __init__(self, tmp: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            dict(os.environ),
            tmp / f"moto-{self.port}.log",
        )

    def start(self) -> "MotoServer":
        super().start()
        wait_until(self.healthy, 30, f"moto_server on {self.port}", self)
        return self

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/moto-api/", timeout=2).status_code < 500
        except httpx.HTTPError:
            return False

    def client_env(self) -> dict[str, str]:
        """What a process needs to reach it, as boto3 reads it from the environment."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "modelgate-test",
            "AWS_SECRET_ACCESS_KEY": "modelgate-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }


def wait_until(predicate, timeout: float, what: str, process: Process | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process is not None and process.proc and process.proc.poll() is not None:
            raise AssertionError(f"process died while waiting for {what}:\n{process.output()}")
        time.sleep(0.2)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}"
        + (f":\n{process.output()}" if process else "")
    )
