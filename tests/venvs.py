"""Venvs built from a checkout the way a user installs it, away from the dev venv.

- `runtime_venv(source)`: `python3.11 -m venv` + `pip install <source>`: no extras, not
  editable, so the server runs on its declared runtime dependencies only.
- `client_venv(source)`: `pip install <source>/client`: the CLI alone (modelgate-client).
- `mlflow_venv()`: MLflow's client and scikit-learn alone, as a data scientist has them.

All are kept under `cache` (default: the test run's var dir, so `make clean` drops them)
keyed by a hash of what they were built from: a rerun with the same inputs reuses them, a
change rebuilds (the runtime venv keeps its dependencies while pyproject.toml is the same
and reinstalls only the project when its code changed). MODELGATE_FRESH_VENVS=1 rebuilds
from scratch. pip's own wheel cache keeps a rebuild to a minute or less.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = os.environ.get("MODELGATE_VENV_PYTHON") or shutil.which("python3.11") or sys.executable
# What `pip install .` needs from a checkout (the Dockerfile copies the same).
PROJECT_FILES = ("pyproject.toml", "README.md", "config", "registry", "webui", "workers")
CLIENT_FILES = ("client", "pyproject.toml", "registry/__init__.py", "registry/client")
INSTALL_SECONDS = 600


def default_cache() -> Path:
    from django.conf import settings

    return Path(settings.VAR_DIR) / "venvs"


def fresh_requested() -> bool:
    return os.environ.get("MODELGATE_FRESH_VENVS", "").strip().lower() in {"1", "true", "yes"}


def pip_env() -> dict[str, str]:
    """The environment without the dev venv's traces (PATH, VIRTUAL_ENV, PYTHONPATH)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    dev_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != dev_bin)
    return env


def _files(source: Path, names: Iterable[str]) -> list[Path]:
    found = []
    for name in names:
        path = source / name
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts
            )
        elif path.exists():
            found.append(path)
    return found


def tree_hash(source: Path, names: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for path in _files(source, names):
        digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _locked(cache: Path):
    """One build at a time per cache directory (parallel test runs share it)."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _run(args: list, log: Path) -> None:
    with log.open("ab") as out:
        result = subprocess.run(
            [str(a) for a in args],
            env=pip_env(),
            cwd=log.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=INSTALL_SECONDS,
        )
    if result.returncode:
        tail = log.read_text(errors="replace")[-4000:]
        raise AssertionError(f"{' '.join(map(str, args))} exited {result.returncode}:\n{tail}")


def _new_venv(venv: Path) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    venv.mkdir(parents=True)
    (venv.parent / f"{venv.name}.log").unlink(missing_ok=True)
    _run([PYTHON, "-m", "venv", venv], venv.parent / f"{venv.name}.log")


def _prune(cache: Path, prefix: str, keep: Path) -> None:
    """Venvs built from older inputs go, with their logs."""
    for old in cache.glob(f"{prefix}-*"):
        if old != keep and old.name != f"{keep.name}.log":
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)


def _copy_project(source: Path, into: Path) -> Path:
    """Only what a build needs, so setuptools' build/ and egg-info stay out of the checkout."""
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in PROJECT_FILES:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, into / name, ignore=ignore)
        else:
            shutil.copy2(path, into / name)
    return into


def runtime_venv(source: Path = ROOT, cache: Path | None = None) -> Path:
    """A venv with `pip install <source>` (no extras, not editable); returns its directory."""
    cache = cache or default_cache()
    deps = hashlib.sha256((source / "pyproject.toml").read_bytes()).hexdigest()[:12]
    code = tree_hash(source, PROJECT_FILES)
    venv = cache / f"runtime-{deps}"
    with _locked(cache):
        log = cache / f"{venv.name}.log"
        stamp = venv / f".code-{code}"
        if fresh_requested() or not (venv / ".deps-installed").exists():
            _prune(cache, "runtime", venv)
            _new_venv(venv)
            _run([venv / "bin/pip", "install", _copy_project(source, cache / "src")], log)
            (venv / ".deps-installed").touch()
        elif not stamp.exists():  # same dependencies, other code: reinstall only the project
            project = _copy_project(source, cache / "src")
            _run([venv / "bin/pip", "install", "--no-deps", "--force-reinstall", project], log)
        for old in venv.glob(".code-*"):
            old.unlink()
        stamp.touch()
    return venv


def client_venv(source: Path = ROOT, cache: Path | None = None) -> Path:
    """A venv with `pip install <source>/client` only; returns its directory."""
    cache = cache or default_cache()
    venv = cache / f"client-{tree_hash(source, CLIENT_FILES)}"
    with _locked(cache):
        if fresh_requested() or not (venv / ".installed").exists():
            _prune(cache, "client", venv)
            _new_venv(venv)
            _run([venv / "bin/pip", "install", source / "client"], cache / f"{venv.name}.log")
            (venv / ".installed").touch()
    return venv


def installed(venv: Path) -> dict[str, str]:
    """{normalized distribution name: version} of what `pip list` shows in the venv."""
    out = subprocess.run(
        [str(venv / "bin/pip"), "list", "--format", "json"],
        env=pip_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(out)}


# What a data scientist's MLflow environment holds: MLflow's client, scikit-learn, and the SQL
# store's packages for a local `sqlite:` tracking URI. Nothing of Modelgate's.
MLFLOW_CLIENT = (
    "mlflow-skinny",
    "scikit-learn",
    "skops",
    "pandas",
    "cloudpickle",
    "sqlalchemy",
    "alembic",
)


def mlflow_venv(cache: Path | None = None) -> Path:
    """A venv with only MLflow's client (at the dev venv's versions, so pip's cache serves
    them); returns its directory."""
    from importlib.metadata import version

    pins = [f"{name}=={version(name)}" for name in MLFLOW_CLIENT]
    cache = cache or default_cache()
    venv = cache / f"mlflow-{hashlib.sha256(' '.join(pins).encode()).hexdigest()[:12]}"
    with _locked(cache):
        if fresh_requested() or not (venv / ".installed").exists():
            _prune(cache, "mlflow", venv)
            _new_venv(venv)
            _run([venv / "bin/pip", "install", *pins], cache / f"{venv.name}.log")
            (venv / ".installed").touch()
    return venv
