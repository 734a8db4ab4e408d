"""A private Postgres cluster for tests that stop and restart the database under load.

initdb in a temporary directory, `pg_ctl` on a free port of 127.0.0.1, trust auth, the
unix socket in the same directory: nothing is shared with the machine's own Postgres.
initdb refuses to run as root, so as root everything runs as the `postgres` OS user.
"""

import glob
import os
import shutil
import subprocess
import time
from pathlib import Path

import psycopg

from .processes import free_port


def binaries() -> Path | None:
    """The newest installed Postgres's bin directory, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[-3])
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PgCluster:
    def __init__(self, root: Path, bin_dir: Path):
        self.root, self.bin = root, bin_dir
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = free_port()
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *args: str, timeout: float = 60) -> None:
        result = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=timeout)
        if result.returncode:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {result.stdout}{result.stderr}\n{tail}")

    def init(self) -> "PgCluster":
        self.root.mkdir(parents=True, exist_ok=True)
        if self._as:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
        )  # fmt: skip
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 200\n"
            )
        return self

    def start(self) -> None:
        self._pg_ctl("start", "-l", str(self.log))

    def stop(self) -> None:
        self._pg_ctl("stop", "-m", "fast")

    def restart(self) -> None:
        self._pg_ctl("restart", "-m", "fast", "-l", str(self.log))

    def _pg_ctl(self, *args: str) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", *args)

    def url(self, name: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def connect(self, name: str = "postgres", timeout: float = 2) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=name,
            connect_timeout=timeout, autocommit=True,
        )  # fmt: skip

    def accepting(self) -> bool:
        try:
            with self.connect(timeout=1):
                return True
        except psycopg.OperationalError:
            return False

    def wait_accepting(self, timeout: float = 30) -> float:
        """Poll until a connection succeeds; returns that moment (time.monotonic)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.accepting():
                return time.monotonic()
            time.sleep(0.05)
        raise AssertionError(f"postgres on {self.port} did not come back in {timeout}s")

    def create_database(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                [*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data), "stop", "-m",
                 "immediate"],
                capture_output=True, timeout=60, check=False,
            )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)
