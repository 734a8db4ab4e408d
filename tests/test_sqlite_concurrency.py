"""SQLite under `make run`'s concurrency: no 5xx and no "database is locked".

The stack is `make run`'s (deploy/run_local.py: gunicorn 2 workers x 4 threads, a Celery
worker and beat) on the embedded defaults: one SQLite file, the file broker, the local
store. Eight client threads then write and read at once for a few seconds: alias moves,
metadata version creates, small multipart uploads (which the worker verifies and makes
ready, writing too), token creates, and alias resolutions on fresh connections. Every
response must be the one expected, and no log of any of the processes may say
"database is locked".
"""

import logging
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
START_SECONDS = 180
LOAD_SECONDS = 6.0
MODEL = "sqlite-conc"
LOCKED = "database is locked"

logging.getLogger("httpx").setLevel(logging.WARNING)  # hundreds of requests below

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process tree"),
    pytest.mark.timeout(420),
]


def stack_env(var: Path, password: str) -> dict[str, str]:
    """A newcomer's shell: none of the test run's database, broker or cache settings."""
    drop = {"DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "CI"}
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in drop and not k.startswith(("MODELGATE_", "PYTEST"))
    }
    env.update(
        MODELGATE_VAR_DIR=str(var),
        MODELGATE_DEMO_PASSWORD=password,
        MODELGATE_TOKEN_RATE="100000/min",  # token creates are part of the write load
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """`make run` on SQLite: migrate, then the supervisor; yields (URL, password, var, logs)."""
    root = tmp_path_factory.mktemp("sqlite-stack")
    var = root / "var"
    password = secrets.token_urlsafe(12)
    env = stack_env(var, password)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, env=env, check=True
    )
    port = free_port()
    log = root / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "deploy/run_local.py", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_SECONDS
        while "Modelgate is serving" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the stack did not come up:\n{log.read_text()[-4000:]}")
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}", password, var, [log, var / "worker.log", var / "beat.log"]
    finally:
        proc.terminate()  # the supervisor stops gunicorn, the worker and beat
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def token(base: str, password: str) -> str:
    response = httpx.post(
        f"{base}/api/v1/auth/tokens/",
        json={"username": "alice", "password": password, "name": "conc"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return response.json()["token"]


def upload(api: httpx.Client, n: int) -> httpx.Response:
    files = {"files": ("README.md", f"# {MODEL} {n} {secrets.token_hex(4)}\n".encode())}
    return api.post(f"/api/v1/models/{MODEL}/versions/", files=files)


def wait_ready(api: httpx.Client, count: int, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        params = {"state": "ready", "page_size": 500}
        page = api.get(f"/api/v1/models/{MODEL}/versions/", params=params)
        if len(page.json()["results"]) >= min(count, 500):
            return
        time.sleep(0.2)
    pytest.fail(f"{count} versions of {MODEL} never got ready")


def test_concurrent_writes_and_reads_on_sqlite(stack):
    base, password, var, logs = stack
    db = sqlite3.connect(var / "modelgate.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)  # readers never wait
    db.close()
    secret = token(base, password)
    auth = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=base, headers=auth, timeout=60) as api:
        made = api.post("/api/v1/models/", json={"name": MODEL, "team": "risk"})  # demo alice
        assert made.status_code == 201, made.text
        for n in range(3):
            assert upload(api, n).status_code == 201
        wait_ready(api, 3)
        moved = api.put(f"/api/v1/models/{MODEL}/aliases/champion/", json={"version": 1})
        assert moved.status_code == 200, moved.text

    files = [{"path": "model.bin", "size": 1, "sha256": "0" * 64}]

    def one(kind: str, i: int, api: httpx.Client) -> tuple[str, int, int]:
        """(kind, status, the status expected) of one request."""
        if kind == "move":
            path = f"/api/v1/models/{MODEL}/aliases/champion/"
            return kind, api.put(path, json={"version": 1 + i % 3}).status_code, 200
        if kind == "create":
            path = f"/api/v1/models/{MODEL}/versions/"
            return kind, api.post(path, json={"files": files}).status_code, 201
        if kind == "upload":
            return kind, upload(api, i).status_code, 201
        if kind == "token":
            body = {"username": "alice", "password": password, "name": f"t{i}"}
            return kind, api.post("/api/v1/auth/tokens/", json=body).status_code, 201
        # a fleet of short-lived clients: a new connection per resolution
        with httpx.Client(base_url=base, headers=auth, timeout=60) as fresh:
            status = fresh.get(f"/api/v1/models/{MODEL}/versions/@champion/").status_code
        return kind, status, 200

    kinds = ["move", "move", "create", "upload", "token", "read", "read", "read"]

    def client(kind: str) -> list[tuple[str, int, int]]:
        results, deadline = [], time.monotonic() + LOAD_SECONDS
        with httpx.Client(base_url=base, headers=auth, timeout=60) as api:
            i = 0
            while time.monotonic() < deadline:
                results.append(one(kind, i, api))
                i += 1
        return results

    with ThreadPoolExecutor(len(kinds)) as pool:
        results = [r for batch in pool.map(client, kinds) for r in batch]

    done = Counter(kind for kind, _, _ in results)
    print(f"{len(results)} requests in {LOAD_SECONDS:g}s at concurrency {len(kinds)}: {done}")
    unexpected = Counter((kind, status) for kind, status, want in results if status != want)
    assert not unexpected, unexpected
    assert set(done) == set(kinds), done  # each kind really ran
    assert sum(done[k] for k in ("move", "create", "upload", "token")) >= 20, done
    with httpx.Client(base_url=base, headers=auth, timeout=60) as api:
        wait_ready(api, 3 + done["upload"])  # the worker's writes happened too
    text = "".join(path.read_text(errors="replace") for path in logs if path.exists())
    assert LOCKED not in text, re.findall(f".*{LOCKED}.*", text)[:5]
    assert "Internal Server Error" not in text, re.findall(r".*Internal Server Error.*", text)[:5]
