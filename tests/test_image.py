"""The image, built and run as deployed: podman, on a Debian base built from the mirror.

The Dockerfile is built on a bookworm rootfs that mmdebstrap makes from the machine's
Debian mirror (no container hub is reachable here), with pip using the host's package
index. Its containers then run on the host's network against a database of the test's own
on the test Postgres and a redis-server of the test's own: migrations, the web with the
image's CMD and one Celery worker on both queues, as the image's non-root user. A model
goes through them over HTTP. docker-compose.yml is read by podman-compose.
"""

import json
import os
import subprocess
import time
import uuid

import httpx
import psycopg
import pytest
import yaml
from django.db import connection

from . import image_support as image
from .processes import ROOT, Redis, free_port, wait_until
from .runtime_journey import run_journey
from .venvs import client_venv

missing = image.missing_tools()
if missing and os.environ.get("CI", "").lower() == "true":
    raise RuntimeError(
        f"CI needs {', '.join(missing)} for tests/test_image.py (make test installs them as root)"
    )
pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        bool(missing),
        reason=f"{', '.join(missing)} not installed (make deploy-tools, as root)",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="podman runs containers as root here"),
]
DOTENV = {
    "SECRET_KEY": "image-test-secret-key-0123456789abcdef",
    "POSTGRES_PASSWORD": "unused-here",
    "MINIO_ROOT_USER": "modelgate",
    "MINIO_ROOT_PASSWORD": "unused-here-too",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The image, tagged modelgate:<version>-test; timings printed for the report."""
    timings = image.base_image()
    timings["build"] = image.build_image(tmp_path_factory.mktemp("build"))
    print("image timings (s):", {k: round(v, 1) for k, v in timings.items()})
    return image.image_tag()


def inspect(tag: str, template: str) -> str:
    return image.podman("image", "inspect", "--format", template, tag).stdout.strip()


def test_image_runs_as_uid_1000_with_the_version_label_and_no_build_leftovers(built):
    assert inspect(built, "{{.Config.User}}") == "modelgate"
    label = inspect(built, '{{index .Config.Labels "org.opencontainers.image.version"}}')
    assert label == image.version()
    env = inspect(built, "{{.Config.Env}}")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "MODELGATE_STATIC_ROOT=/app/static" in env
    probe = (
        "id -u; for p in python gunicorn celery modelgate git; do command -v $p; done; python -V;"
        " ls /run/secrets /etc/pip.conf /data/secret_key /data/broker /src 2>/dev/null | wc -l;"
        " test -w /data && test -w /tmp && test -s /app/static/webui/favicon.svg && echo writable"
    )
    out = image.podman("run", "--rm", built, "sh", "-c", probe).stdout.split()
    assert out[0] == "1000"
    assert out[1:5] == [f"/opt/venv/bin/{p}" for p in ("python", "gunicorn", "celery", "modelgate")]
    assert out[5] == "/usr/bin/git" and out[6:8] == ["Python", out[7]] and out[7].startswith("3.11")
    # no pip config, build-time key, broker directory or build tree was left in a layer
    assert out[8:] == ["0", "writable"], out


@pytest.fixture
def image_db():
    """A fresh database on the test Postgres, for the containers to migrate; dropped after."""
    db = connection.settings_dict
    if not db["ENGINE"].endswith("postgresql"):
        pytest.skip("the containers need Postgres (CI=true runs on it)")
    name = f"test_{db['NAME'].removeprefix('test_')}_image"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    server = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"{server}/{name}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def image_cmd(tag: str, port: int) -> list[str]:
    """The image's CMD with only the port moved (the host's 8000 may be taken)."""
    argv = json.loads(inspect(tag, "{{json .Config.Cmd}}"))
    assert "0.0.0.0:8000" in argv, argv
    return [f"127.0.0.1:{port}" if arg == "0.0.0.0:8000" else arg for arg in argv]


def test_migrate_web_and_worker_containers_take_a_model_through(built, image_db, tmp_path):
    redis = Redis(tmp_path).start()
    data = tmp_path / "data"
    volumes = {}
    for sub in ("store", "git"):
        (data / sub).mkdir(parents=True)
        os.chown(data / sub, 1000, 1000)
        volumes[data / sub] = f"/data/{sub}"
    env = {
        "DATABASE_URL": image_db,
        "CELERY_BROKER_URL": redis.url,
        "REDIS_URL": redis.url.rsplit("/", 1)[0] + "/1",
        "SECRET_KEY": DOTENV["SECRET_KEY"],
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    run = uuid.uuid4().hex[:8]
    migrate, web, worker = (f"mg-test-{run}-{role}" for role in ("migrate", "web", "worker"))
    port = free_port()
    try:
        image.run_container(migrate, env, {}, "python", "manage.py", "migrate", "--no-input")
        code = image.podman("wait", migrate, timeout=300).stdout.strip()
        assert code == "0", image.logs(migrate)

        image.run_container(web, env, volumes, *image_cmd(built, port))
        image.run_container(
            worker, env, volumes,
            "celery", "-A", "workers.celery", "worker", "-Q", "celery,processing",
            "--concurrency", "2", "--loglevel", "INFO",
        )  # fmt: skip
        for name in (web, worker):
            assert inspect_container(name, "{{.Config.User}}") == "modelgate"
            assert image.podman("exec", name, "id", "-u").stdout.strip() == "1000"
        base_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _healthy(base_url) or _exited(web), 90, "the web container")
        assert not _exited(web), image.logs(web)

        def server_shell(code: str) -> str:
            return image.podman(
                "exec", web, "python", "manage.py", "shell", "--no-imports", "-c", code
            ).stdout  # fmt: skip

        started = time.monotonic()
        seen = run_journey(
            base_url, client_venv() / "bin", server_shell=server_shell, workdir=tmp_path / "j"
        )
        assert seen, seen
        print(f"journey in containers: {time.monotonic() - started:.1f}s")
        # blobs and the Git mirror were written as uid 1000 into the volumes given
        written = list((data / "git").rglob("*")) + list((data / "store").rglob("*"))
        assert written and {path.stat().st_uid for path in written} == {1000}
    except AssertionError as error:
        raise AssertionError(
            f"{error}\n--- web:\n{image.logs(web)}\n--- worker:\n{image.logs(worker)}"
        ) from error
    finally:
        image.remove(migrate, web, worker)
        redis.stop()


def inspect_container(name: str, template: str) -> str:
    return image.podman("container", "inspect", "--format", template, name).stdout.strip()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _exited(name: str) -> bool:
    return inspect_container(name, "{{.State.Status}}") in ("exited", "stopped")


def test_podman_compose_reads_docker_compose_yml_and_its_image_is_the_version():
    """podman-compose parses and interpolates the file (Debian's 1.0.3 has no `config`, so
    `--dry-run ps`, which does nothing but print); a missing required variable stops it."""
    compose = ["podman-compose", "--dry-run", "-f", str(ROOT / "docker-compose.yml"), "ps"]
    ok = subprocess.run(
        compose, env={**os.environ, **DOTENV}, capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    assert "podman ps" in ok.stdout
    without = {k: v for k, v in {**os.environ, **DOTENV}.items() if k != "POSTGRES_PASSWORD"}
    refused = subprocess.run(compose, env=without, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "set POSTGRES_PASSWORD" in refused.stderr

    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["web"]
    assert service["image"] == f"modelgate:{image.version()}"
    assert service["build"]["args"]["VERSION"] == image.version()
