"""Ingest of prediction records and feedback: ingest tokens, whole-batch validation,
idempotency, size limits, day partitions and retention."""

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from django.db import connection
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient

from registry.models import ApiToken, Event, PredictionFeedback, PredictionRecord
from registry.services.monitoring import partitions, retention

from .conftest import client_for, upload_version

PREDICTIONS = "/api/v1/monitoring/predictions/"
FEEDBACK = "/api/v1/monitoring/feedback/"
INGEST_URLS = {PREDICTIONS, FEEDBACK}


def ingest_token(username: str, model: str | None, environment: str | None = None, **extra):
    body = {
        "username": username,
        "password": f"{username}-password-1",
        "name": "serving",
        "scopes": ["ingest"],
        "model": model,
        **extra,
    }
    if environment:
        body["environment"] = environment
    return APIClient().post("/api/v1/auth/tokens/", body, format="json")


def bearer(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def now_iso(offset: timedelta = timedelta()) -> str:
    return (datetime.now(UTC) + offset).isoformat().replace("+00:00", "Z")


def record(index: int, version: int = 1, features: int = 3, **changes) -> dict:
    return {
        "model": "fraud",
        "version": version,
        "environment": "staging",
        "request_id": f"req-{index}",
        "at": now_iso(),
        "inputs": {f"f{j}": float(index + j) for j in range(features)},
        "outputs": {"prediction": index % 2, "probabilities": [0.25, 0.75]},
        "latency_ms": 1.5,
        **changes,
    }


@pytest.fixture
def version(alice_api, model) -> int:
    return upload_version(alice_api, model, {"model.pkl": b"not really a model"})


@pytest.fixture
def ingest(alice, version) -> APIClient:
    response = ingest_token("alice", "fraud")
    assert response.status_code == 201, response.content
    return bearer(response.json()["token"])


def post(client: APIClient, url: str, records: list) -> object:
    return client.post(url, {"records": records}, format="json")


# --- ingest tokens -------------------------------------------------------------------


def test_a_contributor_gets_an_ingest_token_bound_to_one_model(alice, model):
    response = ingest_token("alice", model, "staging")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["scopes"], body["model"], body["environment"]) == (["ingest"], "fraud", "staging")
    token = ApiToken.objects.get(pk=body["id"])
    assert (token.model.name, token.environment) == ("fraud", "staging")
    event = Event.objects.get(type="token.created", model_name="fraud")
    assert event.data["model"] == "fraud" and event.data["scopes"] == ["ingest"]
    listed = client_for(alice).get("/api/v1/auth/tokens/").json()
    ingest = next(item for item in listed if item["id"] == body["id"])
    assert {"model": "fraud", "environment": "staging"}.items() <= ingest.items()


@pytest.mark.parametrize(
    "name, extra, status, message",
    [
        ("fraud", {"scopes": ["ingest", "read"]}, 400, "'ingest' alone"),
        ("fraud", {"scopes": ["read"]}, 400, "bind ingest tokens only"),
        (None, {}, 400, "needs the 'model'"),
        ("nope", {}, 404, "does not exist"),
        ("fraud", {"environment": "Not An Env"}, 400, "Environment names"),
    ],
)
def test_ingest_token_requests_that_make_no_sense_are_refused(
    alice, model, name, extra, status, message
):
    response = ingest_token("alice", name, **extra)
    assert response.status_code == status, response.content
    assert message in response.json()["error"]["message"]
    assert not ApiToken.objects.filter(model__isnull=False).exists()


def test_only_contributors_may_create_ingest_tokens(reader, bob, model):
    for user in ("reader", "bob"):
        response = ingest_token(user, model)
        assert response.status_code == 403, response.content
    assert not ApiToken.objects.filter(model__isnull=False).exists()


def _all_api_urls() -> list[str]:
    """Every /api/ URL pattern (REST and MLflow), with sample arguments filled in."""
    urls = []

    def walk(patterns, prefix):
        for entry in patterns:
            route = prefix + str(entry.pattern)
            if isinstance(entry, URLResolver):
                if route.startswith("api/"):
                    walk(entry.url_patterns, route)
            elif isinstance(entry, URLPattern) and route.startswith("api/"):
                if "^" in route or "$" in route:
                    continue  # regex catch-alls
                url = "/" + re.sub(
                    r"<(?:\w+:)?(\w+)>", lambda m: "fraud" if m[1] == "name" else "1", route
                )
                if not any(page in url for page in ("schema", "docs", "redoc")):
                    urls.append(url)

    walk(get_resolver().url_patterns, "")
    return sorted(set(urls))


def test_an_ingest_token_cannot_read_or_change_anything(ingest, version):
    urls = _all_api_urls()
    assert "/api/v1/models/fraud/versions/1/" in urls and PREDICTIONS in urls
    assert any(url.startswith("/api/2.0/mlflow/") for url in urls)
    refused = []
    for url in sorted(set(urls) - INGEST_URLS):
        for method in ("get", "head", "post", "put", "patch", "delete"):
            response = getattr(ingest, method)(url, {}, format="json")
            # MLflow answers a method it does not serve with its own 404.
            allowed = (403, 404, 405) if url.startswith("/api/2.0/") else (403, 405)
            assert response.status_code in allowed, (method, url, response.status_code)
            refused.append(response.status_code)
    assert refused.count(403) > 60
    # Reads that would work for any other token of alice's:
    for url in ("/api/v1/models/", "/api/v1/me/", "/api/v1/models/fraud/versions/1/"):
        assert ingest.get(url).status_code == 403
        assert client_for_alice_read(url) == 200
    mlflow = ingest.get("/api/2.0/mlflow/registered-models/search")
    assert mlflow.status_code == 403
    # Nor may it mint a token, even for itself, or revoke one.
    minted = ingest.post("/api/v1/auth/tokens/", {"name": "x"}, format="json")
    assert minted.status_code == 403
    assert not ApiToken.objects.filter(name="x").exists()


def client_for_alice_read(url: str) -> int:
    from django.contrib.auth.models import User

    return client_for(User.objects.get(username="alice"), ["read"]).get(url).status_code


def test_other_tokens_and_sessions_cannot_write_records(alice, admin_user, version):
    for client in (client_for(alice), client_for(admin_user)):
        response = post(client, PREDICTIONS, [record(1)])
        assert response.status_code == 403
        assert "ingest token" in response.json()["error"]["message"]
    session = APIClient()
    session.force_login(admin_user)
    assert post(session, FEEDBACK, [{"request_id": "a", "label": 1}]).status_code == 403
    assert APIClient().post(PREDICTIONS, {"records": []}, format="json").status_code == 401
    assert not PredictionRecord.objects.exists()


def test_an_ingest_token_cannot_write_for_another_model_or_environment(alice_api, ingest, version):
    alice_api.post("/api/v1/models/", {"name": "other"}, format="json")
    upload_version(alice_api, "other", {"m.pkl": b"x"})
    batch = [record(i) for i in range(5)] + [record(5, model="other")]
    response = post(ingest, PREDICTIONS, batch)
    assert response.status_code == 403
    assert "records[5]" in response.json()["error"]["message"]
    feedback = post(ingest, FEEDBACK, [{"model": "other", "request_id": "req-1", "label": 1}])
    assert feedback.status_code == 403

    staging_only = bearer(ingest_token("alice", "fraud", "staging").json()["token"])
    response = post(staging_only, PREDICTIONS, [record(1), record(2, environment="production")])
    assert response.status_code == 403
    assert "records[1]" in response.json()["error"]["message"]
    assert not PredictionRecord.objects.exists() and not PredictionFeedback.objects.exists()
    # Without an environment in the records, the token's own is used.
    fine = post(staging_only, PREDICTIONS, [{**record(3), "environment": None}])
    assert fine.status_code == 202
    assert PredictionRecord.objects.get().environment == "staging"


def test_a_token_stops_working_when_its_owner_can_no_longer_write(alice, ingest):
    from registry.models import TeamMembership

    TeamMembership.objects.filter(user=alice).update(role="viewer")
    response = post(ingest, PREDICTIONS, [record(1)])
    assert response.status_code == 403
    assert not PredictionRecord.objects.exists()


# --- whole-batch validation ----------------------------------------------------------


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"version": 99}, "version"),
        ({"version": "1"}, "version"),
        ({"request_id": "has space"}, "request_id"),
        ({"request_id": None}, "request_id"),
        ({"at": "yesterday"}, "at"),
        ({"at": "2025-01-02T03:04:05"}, "at"),  # no zone
        ({"at": now_iso(timedelta(days=-400))}, "at"),  # past retention
        ({"at": now_iso(timedelta(days=3))}, "at"),
        ({"inputs": {"f0": {"nested": 1}}}, "inputs.f0"),
        ({"inputs": {"f0": "a\x00b"}}, "inputs.f0"),
        ({"inputs": {"f0": "1e999"}}, "inputs.f0"),  # sent as a bare 1e999 (infinity)
        ({"inputs": [1, 2]}, "inputs"),
        ({"outputs": {"p": "x" * 70_000}}, "outputs"),
        ({"outputs": {"p": ["x" * 40_000, "y" * 40_000]}}, "outputs"),  # too large in all
        ({"outputs": {"label": "a\x00b"}}, "outputs"),
        ({"outputs": {"probabilities": [0.5, "1e999"]}}, "outputs"),
        ({"outputs": {"p": json.loads("[" * 25 + "]" * 25)}}, "outputs"),  # too deep
        ({"request_id": "req-57\n"}, "request_id"),  # "$" of a pattern matches before "\n"
        ({"latency_ms": -1}, "latency_ms"),
        ({"environment": "Prod!"}, "environment"),
        ({"error": 5}, "error"),
        ({"surprise": 1}, None),
    ],
)
def test_a_batch_with_one_bad_record_stores_nothing(ingest, bad, field):
    batch = [record(i) for i in range(100)]
    batch[57] = {**batch[57], **bad}
    body = json.dumps({"records": batch}).replace('"1e999"', "1e999")
    response = ingest.post(PREDICTIONS, body, content_type="application/json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["message"].startswith("records[57]"), error["message"]
    assert error["details"]["index"] == 57
    if field:
        assert error["details"]["field"] == field
    assert PredictionRecord.objects.count() == 0


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"records": [{"latency_ms": NaN}]}', b"[]", b'{"records": {}}', b'{"x": []}'],
)
def test_a_body_that_is_not_a_batch_gets_400(ingest, body):
    response = ingest.post(PREDICTIONS, body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


def test_a_resent_batch_is_stored_once_and_counted_as_duplicates(ingest):
    batch = [record(i) for i in range(20)]
    first = post(ingest, PREDICTIONS, batch)
    assert first.status_code == 202
    assert first.json() == {"accepted": 20, "duplicates": 0}
    again = post(ingest, PREDICTIONS, batch[10:] + [record(i) for i in range(20, 25)])
    assert again.json() == {"accepted": 5, "duplicates": 10}
    assert PredictionRecord.objects.count() == 25
    stored = PredictionRecord.objects.get(request_id="req-3")
    assert stored.inputs == {"f0": 3.0, "f1": 4.0, "f2": 5.0}
    assert stored.outputs == {"prediction": 1, "probabilities": [0.25, 0.75]}
    assert (stored.version_number, stored.environment, stored.latency_ms) == (1, "staging", 1.5)


def test_feedback_is_stored_once_and_joins_predictions_by_request_id(ingest):
    post(ingest, PREDICTIONS, [record(i) for i in range(10)])
    labels = [{"request_id": f"req-{i}", "label": i % 2} for i in range(0, 10, 2)]
    labels.append({"request_id": "req-never-seen", "label": "fraud"})
    response = post(ingest, FEEDBACK, labels)
    assert response.status_code == 202
    assert response.json() == {"accepted": 6, "duplicates": 0}
    assert post(ingest, FEEDBACK, labels[:2]).json() == {"accepted": 0, "duplicates": 2}
    regression = post(ingest, FEEDBACK, [{"request_id": "req-1", "value": 3.5}])
    assert regression.json() == {"accepted": 1, "duplicates": 0}
    joined = PredictionRecord.objects.filter(
        request_id__in=PredictionFeedback.objects.values("request_id")
    )
    assert joined.count() == 6
    assert PredictionFeedback.objects.get(request_id="req-never-seen").label == "fraud"
    for bad in ({"request_id": "x"}, {"request_id": "x", "label": 1, "value": 2.0}):
        response = post(ingest, FEEDBACK, [{"request_id": "ok", "label": 1}, bad])
        assert response.status_code == 400
        assert response.json()["error"]["message"].startswith("records[1]")
    assert PredictionFeedback.objects.filter(request_id="ok").count() == 0


def test_a_batch_over_the_record_limit_gets_413_and_stores_nothing(ingest, settings):
    settings.MODELGATE_INGEST_MAX_RECORDS = 50
    response = post(ingest, PREDICTIONS, [record(i) for i in range(51)])
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert response.json()["error"]["details"]["max_records"] == 50
    assert post(ingest, PREDICTIONS, [record(i) for i in range(50)]).status_code == 202
    assert PredictionRecord.objects.count() == 50


def test_a_body_over_the_byte_limit_gets_413_and_stores_nothing(ingest, settings):
    settings.MODELGATE_INGEST_MAX_BYTES = 10_000
    response = post(ingest, PREDICTIONS, [record(i, features=50) for i in range(20)])
    assert response.status_code == 413
    assert response.json()["error"]["details"]["max_bytes"] == 10_000
    assert PredictionRecord.objects.count() == 0


# --- over real HTTP: the documented batch limit ----------------------------------------


@pytest.fixture
def live_ingest(transactional_db, live_server, alice, alice_api, model):
    upload_version(alice_api, model, {"model.pkl": b"x"})
    secret = ingest_token("alice", model).json()["token"]
    with httpx.Client(
        base_url=live_server.url, headers={"Authorization": f"Bearer {secret}"}, timeout=300
    ) as client:
        yield client


def test_ten_thousand_records_of_fifty_features_in_one_batch_are_accepted_whole(live_ingest):
    batch = [record(i, features=50) for i in range(10_000)]
    body = json.dumps({"records": batch}).encode()
    started = time.monotonic()
    response = live_ingest.post(
        PREDICTIONS, content=body, headers={"Content-Type": "application/json"}
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 202, response.text[:500]
    assert response.json() == {"accepted": 10_000, "duplicates": 0}
    assert PredictionRecord.objects.count() == 10_000
    assert len(PredictionRecord.objects.get(request_id="req-9999").inputs) == 50
    print(f"\n10,000 records x 50 features ({len(body) / 2**20:.1f} MiB) in {elapsed:.2f}s")

    # One record more than the documented limit: a clear 413, and nothing of it stored.
    over = [record(i, features=50) for i in range(10_000, 20_001)]
    response = live_ingest.post(PREDICTIONS, json={"records": over})
    assert response.status_code == 413, response.text[:500]
    assert "at most 10000 records" in response.json()["error"]["message"]
    assert PredictionRecord.objects.count() == 10_000


def test_concurrent_overlapping_batches_store_each_record_once(live_ingest):
    # A new batch goes by COPY straight into the table; one that meets a stored (or
    # concurrently written) record falls back to INSERT ... ON CONFLICT DO NOTHING.
    at = now_iso()
    batches = [
        [record(i, at=at) for i in range(start, start + 300)] for start in range(0, 1200, 150)
    ]

    def send(batch: list) -> dict:
        response = live_ingest.post(PREDICTIONS, json={"records": batch})
        assert response.status_code == 202, response.text[:500]
        return response.json()

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(send, batches + batches[:2]))
    sent = sum(len(batch) for batch in batches + batches[:2])
    assert sum(r["accepted"] for r in results) == 1350 == PredictionRecord.objects.count()
    assert sum(r["duplicates"] for r in results) == sent - 1350
    assert PredictionRecord.objects.values("request_id").distinct().count() == 1350


# --- partitions and retention ----------------------------------------------------------


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_records_land_in_day_partitions_and_retention_drops_whole_days(ingest, settings):
    settings.MODELGATE_PREDICTION_RETENTION_DAYS = 30
    old = [record(i, at=now_iso(timedelta(days=-20))) for i in range(5)]
    recent = [record(i, at=now_iso()) for i in range(5, 12)]
    assert post(ingest, PREDICTIONS, old + recent).status_code == 202
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_partitioned_table WHERE partrelid = %s::regclass",
            [partitions.TABLE],
        )
        assert cursor.fetchone()[0] == 1
    today = timezone.now().date()
    old_day = today - timedelta(days=20)
    names = partitions.existing()
    assert {old_day, today} <= set(names)
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "{names[old_day]}"')
        assert cursor.fetchone()[0] == 5

    # Fifteen days later, the old day is past the 30-day retention: its partition goes.
    result = retention.expire_predictions(now=timezone.now() + timedelta(days=15))
    assert result["partitions_dropped"] == [partitions.partition_name(old_day)]
    assert old_day not in partitions.existing()
    assert PredictionRecord.objects.count() == 7
    assert Event.objects.filter(type="monitoring.expired").count() == 1
    # Running it again changes nothing; the coming days' partitions were created ahead.
    again = retention.expire_predictions(now=timezone.now() + timedelta(days=15))
    assert again["partitions_dropped"] == []
    assert today + timedelta(days=16) in partitions.existing()


def test_the_retention_task_runs_from_the_worker_module(ingest, settings):
    from workers import tasks

    settings.MODELGATE_PREDICTION_RETENTION_DAYS = 1
    assert post(ingest, PREDICTIONS, [record(1, at=now_iso(timedelta(hours=-20)))]).json() == {
        "accepted": 1,
        "duplicates": 0,
    }
    assert tasks.expire_predictions()["partitions_dropped"] == []
    assert PredictionRecord.objects.count() == 1
