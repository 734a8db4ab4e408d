"""`make run` on a fresh clone serves as production would (issue 16; issue 18's beat).

The clone builds its own runtime-only `.venv-run` (pip's cache makes that a minute or
less), then three runs of `make run` on the embedded defaults:

1. on a pseudo-terminal, as a user types it: the output names the URL for the PORT given
   and the demo logins, the process list shows gunicorn (no runserver), one Celery worker
   and exactly one beat; a demo login works over HTTP; concurrency 8 of sign-ins and alias
   resolutions gets no error and no "database is locked"; Ctrl-C (a \\x03 on the terminal)
   ends make with 0 and no make error, and every child is gone.
2. the worker is SIGKILLed: beat was never more than one process, and the supervisor
   (which restarts nothing, by design) stops web and beat and fails, so make fails.
3. the supervisor is SIGKILLed: its children do not outlive it (PR_SET_PDEATHSIG).
"""

import contextlib
import fcntl
import logging
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import termios
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
INSTALL_SECONDS = 300
START_SECONDS = 90
STOP_SECONDS = 45
ALIAS = "/api/v1/models/fraud-detector/versions/@champion/"  # the bench's "resolve alias"

logging.getLogger("httpx").setLevel(logging.WARNING)  # hundreds of requests below

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process tree"),
    pytest.mark.skipif(not (shutil.which("make") and shutil.which("git")), reason="make, git"),
    pytest.mark.timeout(600),
]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in (
        "CI",
        "DATABASE_URL",
        "CELERY_BROKER_URL",
        "REDIS_URL",
        "MODELGATE_VAR_DIR",
        "MODELGATE_DEMO_PASSWORD",
        "DJANGO_SETTINGS_MODULE",
        "VIRTUAL_ENV",
        "PYTHONPATH",
        "MAKEFLAGS",
        "MFLAGS",
        "MAKELEVEL",
    ):
        env.pop(name, None)
    bin_dir = str(Path(sys.executable).parent)  # the test venv's: not the clone's
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != bin_dir)
    return env


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, args) of every process, zombies left out."""
    out = subprocess.run(
        ["ps", "-ww", "-eo", "pid=,ppid=,stat=,args="], capture_output=True, text=True, check=True
    ).stdout
    table = {}
    for line in out.splitlines():
        pid, ppid, stat, *args = line.split(None, 3)
        if not stat.startswith("Z"):
            table[int(pid)] = (int(ppid), args[0] if args else "")
    return table


def descendants(root: int) -> dict[int, str]:
    table = processes()
    found, todo = {}, [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, args) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = args
                todo.append(pid)
    return found


def kinds(tree: dict[int, str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {"gunicorn": [], "worker": [], "beat": [], "runserver": []}
    for pid, args in tree.items():
        if "bin/gunicorn" in args and "config/gunicorn.conf.py" in args:
            out["gunicorn"].append(pid)
        elif "workers.celery worker" in args:
            out["worker"].append(pid)
        elif "workers.celery beat" in args:
            out["beat"].append(pid)
        if "runserver" in args:
            out["runserver"].append(pid)
    return out


def beats_of(repo: Path) -> list[int]:
    """Every celery beat of this clone, whoever its parent is now."""
    mark = str(repo / ".venv-run")
    return [
        pid
        for pid, (_, args) in processes().items()
        if mark in args and "workers.celery beat" in args
    ]


def of_clone(repo: Path) -> list[int]:
    mark = str(repo / ".venv-run")
    return [pid for pid, (_, args) in processes().items() if mark in args]


def wait_gone(pids, seconds: float) -> set[int]:
    deadline = time.monotonic() + seconds
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        table = processes()
        alive = {pid for pid in alive if pid in table}
        time.sleep(0.2)
    return alive


class MakeRun:
    """`make run PORT=… HOST=…` in the clone, on a pseudo-terminal or on a pipe."""

    def __init__(self, repo: Path, port: int, tty: bool):
        self.repo, self.port, self.tty = repo, port, tty
        self.chunks: list[bytes] = []
        cmd = ["make", "run", f"PORT={port}", f"HOST={HOST}"]
        if tty:
            self.master, slave = pty.openpty()
            self.proc = subprocess.Popen(
                cmd,
                cwd=repo,
                env=child_env(),
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
                # the terminal becomes make's controlling one, its session the foreground
                preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
            )
            os.close(slave)
            source = self.master
        else:
            read_end, write_end = os.pipe()
            self.proc = subprocess.Popen(
                cmd,
                cwd=repo,
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=write_end,
                stderr=write_end,
                start_new_session=True,
            )
            os.close(write_end)
            source = read_end
        self.reader = threading.Thread(target=self._read, args=(source,), daemon=True)
        self.reader.start()

    def _read(self, fd: int) -> None:
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the terminal's last writer is gone
                break
            if not data:
                break
            self.chunks.append(data)
        os.close(fd)

    @property
    def output(self) -> str:
        return b"".join(self.chunks).decode(errors="replace").replace("\r\n", "\n")

    def url(self, path: str = "") -> str:
        return f"http://{HOST}:{self.port}/{path}"

    def wait_serving(self, seconds: float) -> float:
        """Seconds until /healthz answered and the supervisor printed its banner."""
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            if self.proc.poll() is not None:
                pytest.fail(f"make run exited {self.proc.returncode}:\n{self.output[-6000:]}")
            if "Modelgate is serving" in self.output:
                assert httpx.get(self.url("healthz"), timeout=5).status_code == 200
                return time.monotonic() - start
            time.sleep(0.3)
        pytest.fail(f"make run did not serve in {seconds}s:\n{self.output[-6000:]}")

    def wait_exit(self, seconds: float = STOP_SECONDS) -> int:
        try:
            return self.proc.wait(seconds)
        except subprocess.TimeoutExpired:
            pytest.fail(f"make run still running after {seconds}s:\n{self.output[-4000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for pid in of_clone(self.repo):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def logins(output: str, port: int) -> dict[str, str]:
    block = output.split(f"Demo logins (http://{HOST}:{port}/login/):", 1)
    assert len(block) == 2, f"no demo logins for port {port}:\n{output[-3000:]}"
    found = dict(re.findall(r"^  (\w+)\s+(\S+)$", block[1], re.MULTILINE))
    assert {"alice", "bob", "carol", "admin"} <= set(found), found
    return found


def sign_in(base: str, username: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=30)
    page = client.get("/login/")
    assert page.status_code == 200, page.text[:500]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    response = client.post(
        "/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token},
        headers={"Referer": base + "/login/"},
    )
    assert response.status_code == 302 and response.headers["location"] == "/", response.text
    assert "sessionid" in client.cookies
    return client


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("make-run") / "modelgate"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True)
    return repo


def test_make_run_serves_like_production_and_stops_cleanly(clone):
    repo = clone
    port = free_port()
    started = time.monotonic()
    run = MakeRun(repo, port, tty=True)
    try:
        serving = run.wait_serving(INSTALL_SECONDS + START_SECONDS)
        print(f"fresh clone: install + migrate + demo + serving in {serving:.1f}s")
        output = run.output
        assert f"Modelgate is serving http://{HOST}:{port}/" in output
        passwords = logins(output, port)
        assert "development server" not in output
        assert "pip install --quiet -e ." in output and "'.[dev]'" not in output
        assert not (repo / ".venv").exists()  # make test's venv stays apart

        tree = descendants(run.proc.pid)
        found = kinds(tree)
        assert found["runserver"] == [], tree
        assert len(found["gunicorn"]) == 3, tree  # the master and two workers
        assert len(found["worker"]) == 1, tree
        assert len(found["beat"]) == 1, tree
        assert beats_of(repo) == found["beat"]

        client = sign_in(run.url().rstrip("/"), "alice", passwords["alice"])
        home = client.get("/")
        assert home.status_code == 200 and "alice" in home.text
        alias = client.get(ALIAS)
        assert alias.status_code == 200, alias.text

        # SQLite's single writer at the bench's concurrency 8: sign-ins write (a session
        # and last_login), alias reads on fresh connections; nothing may fail.
        base = run.url().rstrip("/")

        def journey(i: int) -> list[int]:
            user = ["alice", "bob", "carol", "admin"][i % 4]
            session = sign_in(base, user, passwords[user])
            cookies = dict(session.cookies)
            session.close()
            codes = [200]  # the sign-in itself
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                with httpx.Client(base_url=base, timeout=60, cookies=cookies) as fresh:
                    codes.append(fresh.get(ALIAS).status_code)
            return codes

        with ThreadPoolExecutor(8) as pool:
            codes = [code for result in pool.map(journey, range(8)) for code in result]
        assert len(codes) > 8 and set(codes) == {200}, sorted(set(codes))
        logs = run.output + "".join(
            (repo / "var" / name).read_text(errors="replace") for name in ("worker.log", "beat.log")
        )
        assert "database is locked" not in logs
        print(f"concurrency 8: {len(codes)} requests, all 200")

        children = set(tree)
        stop = time.monotonic()
        os.write(run.master, b"\x03")  # Ctrl-C, as typed
        code = run.wait_exit()
        print(f"Ctrl-C to make's exit: {time.monotonic() - stop:.1f}s")
        assert code == 0, run.output[-4000:]
        assert "make: ***" not in run.output
        assert wait_gone(children, 5) == set()
        assert of_clone(repo) == []
    finally:
        run.kill()
    print(f"run 1 total {time.monotonic() - started:.1f}s")


def test_a_killed_worker_leaves_one_beat_and_stops_the_rest(clone):
    port = free_port()
    run = MakeRun(clone, port, tty=False)
    try:
        print(f"second start (venv ready) serving in {run.wait_serving(START_SECONDS):.1f}s")
        found = kinds(descendants(run.proc.pid))
        assert len(found["worker"]) == 1 and len(found["beat"]) == 1, found
        (beat,) = found["beat"]
        children = set(descendants(run.proc.pid))
        os.kill(found["worker"][0], signal.SIGKILL)
        # Beat is its own process: the killed worker leaves no beat of its own behind,
        # so at no moment is there more than the one the supervisor started.
        most = 0
        while run.proc.poll() is None:
            beats = beats_of(clone)
            most = max(most, len(beats))
            assert set(beats) <= {beat}, beats
            time.sleep(0.1)
        assert most <= 1
        # The supervisor restarts nothing: a dead child stops the others, make fails.
        assert run.wait_exit() != 0
        assert "run_local: worker exited (-9); stopping the others" in run.output
        assert wait_gone(children, 5) == set()
        assert beats_of(clone) == [] and of_clone(clone) == []
    finally:
        run.kill()


def test_children_do_not_outlive_a_killed_supervisor(clone):
    port = free_port()
    run = MakeRun(clone, port, tty=False)
    try:
        run.wait_serving(START_SECONDS)
        tree = descendants(run.proc.pid)
        (supervisor,) = [pid for pid, args in tree.items() if "deploy/run_local.py" in args]
        children = set(tree) - {supervisor}
        assert len(children) == 5, tree  # gunicorn's master and 2 workers, worker, beat
        os.kill(supervisor, signal.SIGKILL)
        assert run.wait_exit() != 0
        assert wait_gone(children, 30) == set(), processes()
        assert of_clone(clone) == []
    finally:
        run.kill()
