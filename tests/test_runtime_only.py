"""The server as it ships, on its declared runtime dependencies only, and the client alone.

Two venvs are built from this checkout as a user installs it (tests/venvs.py: cached by
what they are built from; MODELGATE_FRESH_VENVS=1 rebuilds them): `pip install .` (no
extras, not editable) and `pip install ./client`.

1. The client-only venv has no Django (nor anything else of the server's); `modelgate
   --help` works, its version is the server's, and importing the CLI loads no Django.
2. In the runtime venv every module of the installed config, registry, webui and workers
   imports after django.setup(), and every third-party module any of them imports (even
   lazily) is installed, but for a tiny, commented dev-only list (tests/runtime_imports.py).
   A dependency dropped from pyproject.toml fails here, naming the modules that need it.
3. gunicorn (config/gunicorn.conf.py) and a Celery worker on both queues, from the runtime
   venv and a directory outside the checkout (so the installed copy is what runs), serve
   tests/runtime_journey.py: sign-in, tokens, a CLI push from the client-only venv, a
   four-eyes promotion to staging, ingest with labels, aggregation, live accuracy and a
   fired monitor, all over HTTP.
"""

import json
import subprocess
import tomllib
from pathlib import Path

import pytest

from . import venvs
from .processes import ROOT, Redis, Web, Worker, base_env
from .runtime_journey import run_journey

pytestmark = [pytest.mark.live, pytest.mark.timeout(1200)]

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# Distributions of the server's that a client-only install must not pull in.
SERVER_ONLY = {
    "django",
    "djangorestframework",
    "celery",
    "psycopg",
    "psycopg-binary",
    "scipy",
    "numpy",
    "gunicorn",
    "boto3",
    "gitpython",
    "cryptography",
}


@pytest.fixture(scope="module")
def runtime() -> Path:
    return venvs.runtime_venv()


@pytest.fixture(scope="module")
def client() -> Path:
    return venvs.client_venv()


def run(args: list, env: dict, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(a) for a in args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stderr}"
    return result


def server_env(runtime: Path, broker: str, var_dir: Path) -> dict[str, str]:
    """The test's database and broker, nothing of the dev venv or of the checkout."""
    env = base_env(broker, MODELGATE_VAR_DIR=str(var_dir))
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = f"{runtime / 'bin'}:{venvs.pip_env()['PATH']}"
    return env


def test_the_client_installs_alone_without_django(client, tmp_path):
    dists = venvs.installed(client)
    assert dists.get("modelgate-client") == VERSION, dists
    assert "modelgate" not in dists
    assert not SERVER_ONLY & set(dists), sorted(SERVER_ONLY & set(dists))
    assert {"httpx", "click", "tqdm"} <= set(dists)

    env = {k: v for k, v in venvs.pip_env().items() if not k.startswith("MODELGATE_")}
    env["MODELGATE_CONFIG_DIR"] = str(tmp_path / "config")
    modelgate = client / "bin" / "modelgate"
    helped = run([modelgate, "--help"], env, tmp_path).stdout
    assert "push" in helped and "promote" in helped, helped
    assert run([modelgate, "--version"], env, tmp_path).stdout.strip() == (
        f"modelgate, version {VERSION}"
    )
    script = (
        "import importlib.util, sys\n"
        "from registry.client import Client\n"
        "from registry.client.cli import main\n"
        "assert importlib.util.find_spec('django') is None, 'django is importable'\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'numpy'))\n"
        "assert not loaded, loaded\n"
        "print(sys.modules['registry.client'].__file__)\n"
    )
    where = run([client / "bin" / "python", "-c", script], env, tmp_path).stdout.strip()
    assert where.startswith(str(client)), where

    # --baseline needs numpy, an extra here: a clear message, and nothing is sent.
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(b"\0" * 16)
    (tmp_path / "data.csv").write_text("x,label\n1,0\n2,1\n")
    refused = subprocess.run(
        [modelgate, "push", tmp_path / "model", "-m", "m", "--baseline", tmp_path / "data.csv"],
        env={**env, "MODELGATE_URL": "http://127.0.0.1:9", "MODELGATE_TOKEN": "unused"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1, refused.stderr
    assert "--baseline needs numpy" in refused.stderr and "[baseline]" in refused.stderr


def test_every_server_module_imports_on_the_runtime_dependencies(runtime, tmp_path, settings):
    dists = venvs.installed(runtime)
    assert dists.get("modelgate") == VERSION
    assert not {"pytest", "scikit-learn", "playwright", "ruff"} & set(dists)  # no dev extra
    env = server_env(runtime, settings.CELERY_BROKER_URL, tmp_path / "var")
    checker = ROOT / "tests" / "runtime_imports.py"
    # -P: the checker's own directory (the checkout's tests/) stays off sys.path.
    out = run([runtime / "bin" / "python", "-P", checker], env, tmp_path).stdout
    report = json.loads(out.strip().splitlines()[-1])
    site = str(runtime / "lib")
    assert all(path.startswith(site) for path in report["files"].values()), report["files"]
    assert report["modules"] > 100, report
    failed = [f"  {name}: {error}" for name, error in sorted(report["failed"].items())]
    missing = [f"  {top}: imported by {', '.join(by)}" for top, by in report["missing"].items()]
    assert not failed and not missing, "\n".join(
        ["modules that do not import:", *failed, "imported but not installed:", *missing]
    )


def test_the_journey_on_the_runtime_venv(runtime, client, tmp_path, settings, transactional_db):
    settings.MODELGATE_GIT_DIR = tmp_path / "git"
    outside = tmp_path / "run"  # the processes' working directory: not the checkout
    outside.mkdir()
    redis = Redis(tmp_path).start()
    env = server_env(runtime, redis.url, tmp_path / "var")
    python = runtime / "bin" / "python"

    def shell(code: str) -> str:
        return run(
            [python, "-m", "django", "shell", "--no-imports", "-c", code], env, outside
        ).stdout

    started = []
    try:
        run([python, "-m", "django", "migrate", "--no-input", "-v0"], env, outside)
        installed_at = shell("import registry, webui; print(registry.__file__, webui.__file__)")
        assert all(p.startswith(str(runtime)) for p in installed_at.split()), installed_at
        web = Web(env, tmp_path, cwd=outside, bin=runtime / "bin")
        worker = Worker(
            env, tmp_path, "runtime", cwd=outside, bin=runtime / "bin",
            queues=("celery", "processing"),
        )  # fmt: skip
        started += [web.start(), worker.start()]
        try:
            result = run_journey(
                web.url, client / "bin", server_shell=shell, workdir=tmp_path / "journey"
            )
        except AssertionError as exc:
            logs = f"--- web:\n{web.output()}\n--- worker:\n{worker.output()}"
            raise AssertionError(f"{exc}\n{logs}") from None
        print(f"journey: {json.dumps(result['seconds'])}")
        assert result["accuracy"] == result["expected_accuracy"] == 0.65
        logs = web.output() + worker.output()
        assert "ModuleNotFoundError" not in logs and "ImportError" not in logs, logs
    finally:
        for process in reversed(started):
            process.stop()
        redis.stop()
