"""A database that went away answers 503 with Retry-After on every door, never a 500; a
pooled connection that a restart killed is replaced before a request uses it."""

import contextlib
import threading

import httpx
import pytest
from django.db import OperationalError, connection
from django.test import Client

from registry.models import Job
from registry.services import jobs

from .conftest import client_for, token_for, wait_for
from .processes import free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def postgres():
    if connection.vendor != "postgresql":
        pytest.skip("the faults are Postgres's (a killed backend, a refused connection)")


def test_a_pooled_connection_killed_by_a_restart_is_replaced_not_failed(postgres, stack, alice):
    """gunicorn as deployed keeps connections 60 s: kill them all, as a restart would."""
    web = stack.web(stack.redis().url)
    headers = {"Authorization": f"Bearer {token_for(alice)}"}
    for _ in range(8):  # every gunicorn thread holds a connection now
        assert httpx.get(f"{web.url}/api/v1/models/", headers=headers).status_code == 200
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchall()  # there were pooled connections to kill
    statuses = [
        httpx.get(f"{web.url}/api/v1/models/", headers=headers).status_code for _ in range(16)
    ]
    assert statuses == [200] * 16


def test_a_database_that_refuses_connections_is_a_503_on_every_door(postgres, alice):
    api = client_for(alice)
    api.raise_request_exception = False
    browser = Client(raise_request_exception=False)
    browser.force_login(alice)
    port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())  # nothing listens there
    try:
        native = api.get("/api/v1/models/")
        mlflow = api.get("/api/2.0/mlflow/registered-models/search")
        page = browser.get("/models/fraud/")
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port
    assert native.status_code == 503 and native["Retry-After"] == "5"
    assert native.json()["error"]["code"] == "unavailable"
    assert mlflow.status_code == 503 and mlflow.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert page.status_code == 503 and b"unavailable" in page.content
    assert api.get("/api/v1/models/").status_code == 200  # back at once


def test_a_job_whose_connection_dies_is_queued_again_at_once(postgres, monkeypatch):
    """The worker's error path records the failure on a fresh connection: the job waits
    for its retry, not for its lease to run out."""

    def handler(_ref: int) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")  # a restart

    monkeypatch.setitem(jobs.HANDLERS, "db-fault", handler)
    monkeypatch.setattr(jobs, "publish", lambda *a, **k: True)
    Job.objects.create(kind="db-fault", ref_id=1)
    jobs.run("db-fault", 1)
    job = Job.objects.get(kind="db-fault")
    assert job.state == Job.State.QUEUED, job.state
    assert job.attempts == 1 and "OperationalError" in job.last_error


@pytest.fixture
def outage(postgres):
    """Takes the database away from this process (every new connection is refused) and
    brings it back after `seconds`, from a timer thread."""
    port = connection.settings_dict["PORT"]
    timers = []

    def begin(seconds: float) -> None:
        connection.settings_dict["PORT"] = str(free_port())  # shared by every thread
        timer = threading.Timer(seconds, connection.settings_dict.__setitem__, ("PORT", port))
        timers.append(timer)
        timer.start()

    yield begin
    for timer in timers:
        timer.cancel()
    connection.settings_dict["PORT"] = port
    connection.close()


def kill_own_connection() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")


def test_a_job_that_fails_while_the_database_is_down_is_recorded_once_it_is_back(
    outage, monkeypatch
):
    """Recording the failure on a database that is still down would leave the job
    `running` until its lease runs out: the error path waits for the database instead."""

    def handler(_ref: int) -> None:
        outage(1.5)
        kill_own_connection()

    monkeypatch.setitem(jobs.HANDLERS, "db-fault", handler)
    monkeypatch.setattr(jobs, "publish", lambda *a, **k: True)
    Job.objects.create(kind="db-fault", ref_id=1)
    jobs.run("db-fault", 1)
    job = Job.objects.get(kind="db-fault")
    assert job.state == Job.State.QUEUED and job.lease_until is None, job.state
    assert job.attempts == 1 and "OperationalError" in job.last_error


def test_a_job_done_while_the_database_goes_away_is_marked_done_once_it_is_back(
    outage, monkeypatch
):
    done = []

    def handler(ref: int) -> None:
        done.append(ref)
        outage(1.5)
        with contextlib.suppress(OperationalError):
            kill_own_connection()  # the work is done; only recording it meets the outage

    monkeypatch.setitem(jobs.HANDLERS, "db-fault", handler)
    monkeypatch.setattr(jobs, "publish", lambda *a, **k: True)
    Job.objects.create(kind="db-fault", ref_id=1)
    jobs.run("db-fault", 1)
    job = Job.objects.get(kind="db-fault")
    assert done == [1] and job.state == Job.State.DONE and job.attempts == 1, job.state


def test_a_job_whose_lease_cannot_be_taken_while_the_database_is_down_runs_once_it_is_back(
    outage, celery_worker, monkeypatch
):
    """The worker retries the task with a short countdown rather than consuming the
    message, so the job does not wait for the reconciler's re-send (a minute by default)."""
    ran = []
    monkeypatch.setitem(jobs.HANDLERS, "db-wait", ran.append)
    Job.objects.create(kind="db-wait", ref_id=7)
    connection.close()
    outage(2.5)
    assert jobs.publish("db-wait", 7)
    wait_for(lambda: ran == [7], timeout=15)
    wait_for(lambda: Job.objects.get(kind="db-wait").state == Job.State.DONE, timeout=5)
