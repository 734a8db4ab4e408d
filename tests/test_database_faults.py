"""A database that went away answers 503 with Retry-After on every door, never a 500; a
pooled connection that a restart killed is replaced before a request uses it."""

import httpx
import pytest
from django.db import connection
from django.test import Client

from registry.models import Job
from registry.services import jobs

from .conftest import client_for, token_for
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
