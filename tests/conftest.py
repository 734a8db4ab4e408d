"""Shared fixtures: users in their roles, tokens, API clients, a live server, a worker.

Tests run against whatever DATABASE_URL / CELERY_BROKER_URL say. With CI=true they must
be Postgres and Redis, reachable, or the run stops at once: never a silent fallback.
"""

import hashlib
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest
from django.conf import settings as django_settings
from django.core.servers.basehttp import WSGIServer
from rest_framework.test import APIClient

from webui import screenshots

ROOT = Path(__file__).resolve().parent.parent

# Django's live test server listens with a backlog of 10; tests that open 50 connections at
# once (concurrent version creates) would see some refused or reset before it accepts them.
WSGIServer.request_queue_size = 128


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=3
        ):
            return True
    except OSError:
        return False


def pytest_configure(config):
    if os.environ.get("CI", "").lower() != "true":
        return
    db_url = os.environ.get("DATABASE_URL", "")
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not db_url.startswith(("postgres://", "postgresql://")):
        raise pytest.UsageError("CI=true needs DATABASE_URL pointing at Postgres.")
    if not broker.startswith("redis://"):
        raise pytest.UsageError("CI=true needs CELERY_BROKER_URL pointing at Redis.")
    if not _reachable(db_url, 5432):
        raise pytest.UsageError(f"CI=true but Postgres is unreachable at {db_url}.")
    if not _reachable(broker, 6379):
        raise pytest.UsageError(f"CI=true but Redis is unreachable at {broker}.")


def pytest_report_header(config):
    db = django_settings.DATABASES["default"]
    where = f"{db.get('HOST') or 'local file'}:{db.get('PORT') or ''}".rstrip(":")
    return [
        f"modelgate database: {db['ENGINE'].rsplit('.', 1)[-1]} ({db.get('NAME')}) at {where}",
        f"modelgate broker: {urlparse(django_settings.CELERY_BROKER_URL).scheme}",
    ]


@pytest.fixture(scope="session", autouse=True)
def _test_settings(tmp_path_factory):
    """A blob store of the session's own; connections closed after each request."""
    store_root = tmp_path_factory.mktemp("modelgate") / "store"
    django_settings.MODELGATE_STORAGE_URL = f"file://{store_root}"
    django_settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    django_settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["token_create"] = "1000/min"
    # No worker runs in most tests: MLflow's create_model_version would hold every answer
    # for a pipeline that never comes. `celery_worker` turns the wait back on.
    django_settings.MODELGATE_MLFLOW_CREATE_WAIT_SECONDS = 0
    return store_root


@pytest.fixture
def store_root(_test_settings) -> Path:
    return _test_settings


# --- users and tokens ----------------------------------------------------------------


def default_team():
    """The team upgrades put existing models in (created here if a flush removed it)."""
    from registry.models import Team

    return Team.objects.get_or_create(name="default")[0]


def join_team(user, role: str, team: str = "default"):
    """Make `user` a member of `team` (created if missing) with `role`."""
    from registry.models import Team, TeamMembership

    found = Team.objects.get_or_create(name=team)[0]
    TeamMembership.objects.update_or_create(team=found, user=user, defaults={"role": role})
    return found


@pytest.fixture(scope="session", autouse=True)
def _fast_password_hashing():
    """Users made in the test process get cheap password hashes (tests/hashers.py)."""
    from django.contrib.auth import hashers

    django_settings.PASSWORD_HASHERS = ["tests.hashers.FastPBKDF2PasswordHasher"]
    hashers.get_hashers.cache_clear()
    hashers.get_hashers_by_algorithm.cache_clear()


def _make_user(username: str, groups=(), staff: bool = False, team: str | None = "default"):
    """A user in the Django `groups` given ("contributors" stands for the contributor role
    in `team`); every other user is a viewer of `team`, as everyone is of the default team
    after an upgrade. `team=None`: in no team."""
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user(username, password=f"{username}-password-1", is_staff=staff)
    for name in groups:
        if name != "contributors":
            user.groups.add(Group.objects.get_or_create(name=name)[0])
    if team is not None and not staff:
        join_team(user, "contributor" if "contributors" in groups else "viewer", team)
    return user


@pytest.fixture
def alice(db):
    return _make_user("alice", ["contributors"])


@pytest.fixture
def bob(db):
    return _make_user("bob", ["reviewers"])


@pytest.fixture
def carol(db):
    return _make_user("carol", ["reviewers"])


@pytest.fixture
def reader(db):
    return _make_user("reader")


@pytest.fixture
def admin_user(db):
    return _make_user("admin", staff=True)


def token_for(user, scopes=None) -> str:
    from registry.services.tokens import create_token

    return create_token(user, "test", scopes)[1]


def client_for(user, scopes=None) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user, scopes)}")
    return client


@pytest.fixture
def alice_api(alice) -> APIClient:
    return client_for(alice)


@pytest.fixture
def admin_api(admin_user) -> APIClient:
    return client_for(admin_user)


@pytest.fixture
def reader_api(reader) -> APIClient:
    return client_for(reader)


# --- building versions ---------------------------------------------------------------


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def declare(client: APIClient, model: str, files: dict[str, bytes], **metadata):
    body = {
        **metadata,
        "files": [
            {"path": path, "size": len(data), "sha256": sha256_of(data)}
            for path, data in files.items()
        ],
    }
    return client.post(f"/api/v1/models/{model}/versions/", body, format="json")


def upload_version(client: APIClient, model: str, files: dict[str, bytes], **metadata) -> int:
    """Declare, upload whole files and finalize; returns the version number."""
    response = declare(client, model, files, **metadata)
    assert response.status_code == 201, response.content
    number = response.json()["version"]
    for path, data in files.items():
        put = client.put(
            f"/api/v1/models/{model}/versions/{number}/files/{path}",
            data,
            content_type="application/octet-stream",
        )
        assert put.status_code == 200, put.content
    final = client.post(f"/api/v1/models/{model}/versions/{number}/finalize/")
    assert final.status_code == 200, final.content
    return number


@pytest.fixture
def model(alice_api):
    response = alice_api.post(
        "/api/v1/models/", {"name": "fraud", "description": "Fraud"}, format="json"
    )
    assert response.status_code == 201
    return "fraud"


# --- processes -----------------------------------------------------------------------


@pytest.fixture
def celery_worker(transactional_db, settings):
    """A real Celery worker (threads of this process) consuming the configured broker."""
    from celery.contrib.testing.worker import start_worker

    import workers.tasks  # noqa: F401 - registers the tasks
    from workers.celery import app

    app.conf.task_always_eager = False
    settings.MODELGATE_MLFLOW_CREATE_WAIT_SECONDS = 3  # the default: a worker is there
    with start_worker(
        app,
        pool="threads",
        concurrency=2,
        perform_ping_check=False,
        shutdown_timeout=30,
        loglevel="WARNING",
    ) as worker:
        yield worker


def wait_for(predicate, timeout: float = 60, interval: float = 0.2):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
def stack(tmp_path, settings, transactional_db):
    """Real processes against the test database: redis-server, gunicorn, Celery workers
    (with beat, so the reconciler runs every second). Stopped before the database is
    flushed."""
    from .processes import Redis, Web, Worker, base_env

    settings.MODELGATE_GIT_DIR = tmp_path / "git"
    fast_jobs = {
        "MODELGATE_JOB_LEASE_SECONDS": "3",
        "MODELGATE_RECONCILE_SECONDS": "1",
        "MODELGATE_JOB_RESEND_SECONDS": "2",
    }
    started = []

    class Stack:
        def redis(self, port=None):
            return self._keep(Redis(tmp_path, port).start())

        def web(self, broker):
            return self._keep(Web(base_env(broker, **fast_jobs), tmp_path).start())

        def worker(self, broker, name="w1"):
            env = base_env(broker, **fast_jobs)
            return self._keep(Worker(env, tmp_path, name, beat=True).start())

        def _keep(self, process):
            started.append(process)
            return process

    yield Stack()
    for process in reversed(started):
        process.stop()


# --- browser -------------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = screenshots.CHROMIUM_FLAGS


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright (it cannot download its own browser here)."""
    if not CHROMIUM.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI must run the browser tests: /usr/bin/chromium is missing")
        pytest.skip("Debian's chromium is not installed; `make test` installs it as root")
    # Playwright's sync API runs an event loop in this thread; the ORM calls the tests
    # make between browser steps are still plain synchronous calls.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def new_context(browser):
    """Opens browser contexts that record Content-Security-Policy violations (tests/csp.py):
    the test fails at teardown if any page in them saw one."""
    from . import csp

    contexts = csp.Contexts(browser)
    yield contexts
    seen = contexts.seen()
    contexts.close()
    assert not seen, "Content-Security-Policy violations:\n" + "\n".join(seen)


@pytest.fixture
def page(new_context):
    return new_context().new_page()


def sign_in(page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(f"{username}-password-1")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login/" not in url)
