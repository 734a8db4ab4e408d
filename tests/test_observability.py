"""The registry watched too: GET /metrics (parsed as Prometheus text) and request ids in
JSON log lines of a real gunicorn process."""

import json
import uuid
from datetime import timedelta

import httpx
import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from registry.models import (
    Environment,
    Job,
    ModelVersion,
    Promotion,
    RegisteredModel,
    Review,
)

from . import monitoring_pages_support as support
from .conftest import default_team
from .processes import Web, Worker, base_env, wait_until

LABELS = (("environment", "staging"), ("model", "fraud"))


def scrape(client: Client, **extra) -> dict:
    """GET /metrics and return {(name, labels as sorted tuple): value} for every sample."""
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def job(kind: str, ref_id: int, state: str, **fields) -> Job:
    return Job.objects.create(kind=kind, ref_id=ref_id, state=state, **fields)


@pytest.mark.django_db
def test_metrics_report_jobs_per_kind_and_state_from_real_rows():
    long_ago = timezone.now() - timedelta(minutes=10)
    job("process_version", 1, "queued", enqueued_at=long_ago, not_before=long_ago)
    job("process_version", 2, "queued")
    job("process_version", 3, "running", attempts=2, last_error="boom")
    job("promote", 1, "done")
    job("promote", 2, "failed", attempts=6, last_error="gave up")
    job("webhook", 1, "queued", not_before=timezone.now() + timedelta(hours=1))  # not due

    samples = scrape(Client())

    assert samples[("modelgate_database_up", ())] == 1
    jobs = {labels: value for (name, labels), value in samples.items() if name == "modelgate_jobs"}
    assert jobs == {
        (("kind", "process_version"), ("state", "queued")): 2,
        (("kind", "process_version"), ("state", "running")): 1,
        (("kind", "promote"), ("state", "done")): 1,
        (("kind", "promote"), ("state", "failed")): 1,
        (("kind", "webhook"), ("state", "queued")): 1,
    }
    lag = samples[("modelgate_jobs_oldest_queued_seconds", (("kind", "process_version"),))]
    assert 590 < lag < 900
    # the webhook job is not due yet, so it is no lag
    assert ("modelgate_jobs_oldest_queued_seconds", (("kind", "webhook"),)) not in samples

    def failures(kind, outcome):
        return samples[("modelgate_job_failures", (("kind", kind), ("outcome", outcome)))]

    assert failures("process_version", "retrying") == 1
    assert failures("process_version", "gave_up") == 0
    assert failures("promote", "gave_up") == 1

    # the gauges follow the rows: one scrape later the queue is drained
    Job.objects.filter(state="queued").update(state="done")
    samples = scrape(Client())
    assert ("modelgate_jobs", (("kind", "process_version"), ("state", "queued"))) not in samples
    assert samples[("modelgate_jobs", (("kind", "process_version"), ("state", "done")))] == 2


@pytest.mark.django_db
def test_promotion_latency_is_measured_from_approval_to_promoted(bob):
    model = RegisteredModel.objects.create(name="fraud", team=default_team())
    staging = Environment.objects.create(name="staging", required_approvals=0)
    production = Environment.objects.create(name="production")
    now = timezone.now()
    for number, environment, requested, approved, promoted in (
        (1, staging, 100, None, 97),  # no approval needed: 3 s from the request
        (2, production, 500, 40, 0),  # approved 40 s before it went live
        (3, production, 30, None, None),  # still pending: not counted
    ):
        version = ModelVersion.objects.create(model=model, number=number, state="ready")
        promotion = Promotion.objects.create(
            model=model,
            version=version,
            environment=environment,
            state="promoted" if promoted is not None else "pending",
            requested_at=now - timedelta(seconds=requested),
            promoted_at=now - timedelta(seconds=promoted) if promoted is not None else None,
            sequence=number if promoted is not None else None,
        )
        if approved is not None:
            Review.objects.create(
                promotion=promotion,
                reviewer=bob,
                reviewer_name="bob",
                decision="approve",
                comment="ok",
                at=now - timedelta(seconds=approved),
            )

    samples = scrape(Client())

    def latency(suffix: str, environment: str, le: str | None = None) -> float:
        labels = [("environment", environment)] + ([("le", le)] if le else [])
        return samples[(f"modelgate_promotion_latency_seconds_{suffix}", tuple(sorted(labels)))]

    assert latency("count", "staging") == 1
    assert latency("sum", "staging") == pytest.approx(3, abs=0.01)
    assert latency("count", "production") == 1
    assert latency("sum", "production") == pytest.approx(40, abs=0.01)
    assert latency("bucket", "production", "30.0") == 0
    assert latency("bucket", "production", "60.0") == 1


def test_firing_alerts_are_counted_per_model_and_environment(alice_api, alice, model):
    version = support.live_version(alice_api)
    now = support.send_traffic(support.ingest_client(), version.number)
    support.drift_monitor(alice)
    support.drift_monitor(alice, metric="error_rate", value=0.5)  # never fires
    assert scrape(Client()).get(("modelgate_alerts_firing", LABELS)) is None
    support.aggregate_and_alert(now)
    assert scrape(Client())[("modelgate_alerts_firing", LABELS)] == 1


@pytest.mark.django_db
def test_metrics_need_the_token_when_one_is_set(settings, admin_user, alice):
    settings.MODELGATE_METRICS_TOKEN = "scrape-secret-1"
    anonymous = Client()
    response = anonymous.get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"MODELGATE_METRICS_TOKEN" in response.content
    assert anonymous.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert anonymous.get("/metrics", HTTP_AUTHORIZATION="scrape-secret-1").status_code == 401
    assert scrape(anonymous, HTTP_AUTHORIZATION="Bearer scrape-secret-1")
    # a signed-in administrator may look; any other user may not
    contributor = Client()
    contributor.force_login(alice)
    assert contributor.get("/metrics").status_code == 401
    admin = Client()
    admin.force_login(admin_user)
    assert scrape(admin)
    posted = anonymous.post("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret-1")
    assert posted.status_code == 405


@pytest.mark.django_db
def test_without_a_token_metrics_are_for_loopback_only(settings):
    settings.MODELGATE_METRICS_TOKEN = ""
    client = Client()
    assert scrape(client, REMOTE_ADDR="127.0.0.1")
    assert scrape(client, REMOTE_ADDR="::1")
    remote = client.get("/metrics", REMOTE_ADDR="10.1.2.3")
    assert remote.status_code == 403
    assert b"MODELGATE_METRICS_TOKEN" in remote.content
    # a proxy on the same host relays remote callers from 127.0.0.1: not local
    relayed = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="10.1.2.3")
    assert relayed.status_code == 403


@pytest.mark.django_db
def test_every_answer_carries_a_request_id_and_honours_a_sane_one():
    client = Client()
    given = client.get("/healthz", HTTP_X_REQUEST_ID="trace-42:a.b")
    assert given["X-Request-ID"] == "trace-42:a.b"
    made = client.get("/healthz")
    assert len(made["X-Request-ID"]) == 32
    assert made["X-Request-ID"] != client.get("/healthz")["X-Request-ID"]
    # anything that is not an id (log injection, overlong) is replaced, not echoed
    for bad in ("x\ny", "a" * 129, "<script>", ""):
        answer = client.get("/healthz", HTTP_X_REQUEST_ID=bad)
        assert answer["X-Request-ID"] != bad
        assert len(answer["X-Request-ID"]) == 32


def _lines_for(log_text: str, marker: str) -> list[str]:
    return [line for line in log_text.splitlines() if marker in line]


def test_gunicorn_logs_json_lines_with_the_request_id(transactional_db, tmp_path):
    env = base_env(
        django_settings.CELERY_BROKER_URL,
        MODELGATE_LOG_FORMAT="json",
        MODELGATE_METRICS_TOKEN="scrape-secret-2",
    )
    web = Web(env, tmp_path).start()
    try:
        rid = f"obs-{uuid.uuid4().hex}"
        # a 404 is logged by django.request, within the request
        missing = httpx.get(
            f"{web.url}/api/v1/models/no-such-model/", headers={"X-Request-ID": rid}, timeout=10
        )
        assert missing.status_code in (401, 403, 404)
        assert missing.headers["X-Request-ID"] == rid
        made = httpx.get(f"{web.url}/no-such-page/", timeout=10)
        assert made.status_code == 404
        generated = made.headers["X-Request-ID"]
        unauthorised = httpx.get(f"{web.url}/metrics", timeout=10)
        assert unauthorised.status_code == 401
        scraped = httpx.get(
            f"{web.url}/metrics", headers={"Authorization": "Bearer scrape-secret-2"}, timeout=10
        )
        assert scraped.status_code == 200
        names = {f.name for f in text_string_to_metric_families(scraped.text)}
        assert "modelgate_database_up" in names
        assert any(name.startswith("django_http_requests") for name in names)
    finally:
        web.stop()
    log_text = web.log_path.read_text()
    ours = _lines_for(log_text, rid)
    assert ours, log_text[-3000:]
    for line in ours:
        record = json.loads(line)
        assert record["request_id"] == rid
        assert {"time", "level", "logger", "message"} <= record.keys()
    # every line Django logged is a JSON object with a request id (gunicorn's own
    # start/stop lines are its own logger's, outside Django)
    django_lines = [line for line in log_text.splitlines() if line.startswith("{")]
    assert len(django_lines) >= 2
    for line in django_lines:
        assert json.loads(line)["request_id"]
    assert any(json.loads(line)["request_id"] == generated for line in django_lines)


def test_text_logs_carry_the_request_id_too(transactional_db, tmp_path):
    env = base_env(django_settings.CELERY_BROKER_URL, MODELGATE_LOG_FORMAT="text")
    web = Web(env, tmp_path, workers=1).start()
    try:
        rid = f"txt-{uuid.uuid4().hex}"
        httpx.get(f"{web.url}/api/v1/models/nope/", headers={"X-Request-ID": rid}, timeout=10)
    finally:
        web.stop()
    lines = _lines_for(web.log_path.read_text(), rid)
    assert lines and all(f"[{rid}]" in line and not line.startswith("{") for line in lines)


def test_worker_logs_json_lines_with_the_task_id(transactional_db, tmp_path):
    from workers.celery import app

    env = base_env(django_settings.CELERY_BROKER_URL, MODELGATE_LOG_FORMAT="json")
    worker = Worker(env, tmp_path, "observability").start()
    try:
        task_id = app.send_task("modelgate.reconcile").id
        wait_until(
            lambda: f"{task_id}] succeeded" in worker.log_path.read_text(),
            90,
            "the task to succeed",
            worker,
        )
    finally:
        worker.stop()
    records = [
        json.loads(line)
        for line in worker.log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    assert records and all("request_id" in r and "level" in r for r in records)
    ours = [r for r in records if task_id in r["message"]]
    assert any(r["request_id"] == task_id for r in ours), ours
