"""`make run`'s supervisor: gunicorn, one Celery worker and Celery beat, stopped together.

Run with the interpreter of the venv to serve from (stdlib only):

    .venv-run/bin/python deploy/run_local.py --host 127.0.0.1 --port 8000

It loads the demo data, starts the three as children, each in a process group of its
own, waits for /healthz and prints the URL and the demo logins. Then:

- Ctrl-C or SIGTERM: each child gets SIGTERM (SIGKILL for its whole group after a grace
  period), the supervisor waits for all of them and exits 0, so make reports no error.
  On a terminal the supervisor makes its own process group the foreground one, so a
  Ctrl-C reaches it alone: make itself never sees the SIGINT and exits 0 too.
- A child exits on its own (crashed, killed): the others are stopped the same way and the
  supervisor exits 1. Nothing is restarted; run `make run` again.
- The supervisor is SIGKILLed: every child was started with PR_SET_PDEATHSIG (SIGTERM), so
  the kernel stops them; gunicorn's workers leave with their master. The supervisor has
  the same setting towards make.

Beat runs as its own process, never embedded in the worker (`worker --beat` leaves an
orphaned beat behind when the worker is SIGKILLed).
"""

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PR_SET_PDEATHSIG = 1
GRACE_SECONDS = 20.0
STARTUP_SECONDS = 90.0

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Have the kernel send `sig` to this process when its parent dies (Linux only)."""
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def _child_setup(parent: int):
    def setup() -> None:  # runs in the child between fork and exec
        die_with_parent()
        if os.getppid() != parent:  # the supervisor died before the prctl took effect
            os._exit(1)

    return setup


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class Supervisor:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.children: dict[str, subprocess.Popen] = {}
        self.stopping = False
        self.var = Path(os.environ.get("MODELGATE_VAR_DIR", ROOT / "var")).resolve()
        self.tty = None  # (fd, make's process group) while ours is the terminal's foreground

    # --- children ----------------------------------------------------------------------
    def commands(self) -> dict[str, list[str]]:
        a, var = self.args, self.var
        return {
            "web": [
                str(BIN / "gunicorn"),
                "config.wsgi:application",
                "--config",
                str(ROOT / "config" / "gunicorn.conf.py"),
                "--bind",
                f"{url_host(a.host)}:{a.port}",
                "--workers",
                str(a.web_workers),
            ],
            "worker": [
                str(BIN / "celery"),
                "-A",
                "workers.celery",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                str(a.worker_concurrency),
                "--hostname",
                f"run-{os.getpid()}@%h",
                "--loglevel",
                "INFO",
                "--logfile",
                str(var / "worker.log"),
            ],
            "beat": [
                str(BIN / "celery"),
                "-A",
                "workers.celery",
                "beat",
                "--loglevel",
                "INFO",
                "--logfile",
                str(var / "beat.log"),
                "--pidfile",
                str(var / "celerybeat.pid"),
            ],
        }

    def environment(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        if name == "web":  # gunicorn's workers sum /metrics there (gunicorn.conf.py empties it)
            env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(self.var / "prometheus"))
        return env

    def start(self) -> None:
        me = os.getpid()
        for name, cmd in self.commands().items():
            self.children[name] = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=self.environment(name),
                stdin=subprocess.DEVNULL,
                process_group=0,  # a group of its own: signals come from us, not the tty
                preexec_fn=_child_setup(me),
            )

    def stop(self) -> None:
        """SIGTERM every child still running; SIGKILL the groups of those that linger."""
        for proc in self.children.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        for proc in self.children.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for proc in self.children.values():  # whatever a child left in its group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def exited(self) -> str | None:
        for name, proc in self.children.items():
            if proc.poll() is not None:
                return name
        return None

    # --- the terminal ------------------------------------------------------------------
    def take_terminal(self) -> None:
        """Become the terminal's foreground process group, so Ctrl-C reaches us, not make."""
        try:
            fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
        except OSError:
            return  # no terminal: a SIGINT sent to make's group reaches us anyway
        try:
            if os.tcgetpgrp(fd) != os.getpgrp():
                os.close(fd)
                return  # running in the background
            previous = os.getpgrp()
            os.setpgid(0, 0)
            signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            os.tcsetpgrp(fd, os.getpgrp())
            self.tty = (fd, previous)
        except OSError:
            os.close(fd)

    def give_back_terminal(self) -> None:
        if self.tty:
            fd, previous = self.tty
            with contextlib.suppress(OSError):
                os.tcsetpgrp(fd, previous)
            os.close(fd)
            self.tty = None

    # --- the run -----------------------------------------------------------------------
    def base_url(self) -> str:
        return f"http://{url_host(self.args.host)}:{self.args.port}/"

    def healthy(self) -> bool:
        try:
            url = self.base_url() + "healthz"  # http, built here
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
                return response.status == 200
        except OSError:
            return False

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def run(self) -> int:
        die_with_parent()  # make SIGKILLed: we stop too, and stop the children
        self.take_terminal()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        try:
            return self._run()
        finally:
            self.stop()
            self.give_back_terminal()

    def _run(self) -> int:
        demo = subprocess.run(
            [
                sys.executable,
                "manage.py",
                "load_demo",
                "--host",
                self.args.host,
                "--port",
                str(self.args.port),
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            process_group=0,
            preexec_fn=_child_setup(os.getpid()),
        )
        if self.stopping:
            return 0
        if demo.returncode:
            sys.stdout.write(demo.stdout)
            print(f"run_local: load_demo failed ({demo.returncode})", file=sys.stderr)
            return 1
        self.start()
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self.stopping and not self.healthy():
            if self.exited() or time.monotonic() > deadline:
                print("run_local: the web server did not come up", file=sys.stderr)
                return 1
            time.sleep(0.2)
        if self.stopping:
            return 0
        sys.stdout.write(demo.stdout)
        pids = ", ".join(f"{name} {proc.pid}" for name, proc in self.children.items())
        print(
            f"Modelgate is serving {self.base_url()}\n"
            f"  gunicorn ({self.args.web_workers} workers, config/gunicorn.conf.py), "
            f"a Celery worker and Celery beat (pids: {pids})\n"
            f"  logs: {self.var / 'worker.log'}, {self.var / 'beat.log'}\n"
            "  Ctrl-C stops all three.",
            flush=True,
        )
        while not self.stopping:
            name = self.exited()
            if name:
                code = self.children[name].returncode
                print(f"run_local: {name} exited ({code}); stopping the others", file=sys.stderr)
                return 1
            time.sleep(0.2)
        print("\nrun_local: stopping gunicorn, the worker and beat", flush=True)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--worker-concurrency", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if "ALLOWED_HOSTS" not in os.environ and args.host not in ("127.0.0.1", "localhost", "::1"):
        os.environ["ALLOWED_HOSTS"] = f"127.0.0.1,localhost,[::1],{url_host(args.host)}"
    return Supervisor(args).run()


if __name__ == "__main__":
    sys.exit(main())
