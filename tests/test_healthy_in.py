"""The `healthy_in` gate: a version reaches production only after serving enough traffic in
staging, with few errors and no firing alerts — and the review page says why not."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from registry.models import Environment, ModelVersion, Promotion
from registry.services.monitoring import aggregation, alerts
from registry.services.tokens import create_token

from .conftest import client_for, join_team, upload_version
from .test_promotions import review, run_queued

W = 60
GATE = {
    "type": "healthy_in",
    "environment": "staging",
    "min_requests": 500,
    "max_error_rate": 0.01,
    "no_firing_alerts": True,
}


@pytest.fixture(autouse=True)
def _window(settings):
    settings.MODELGATE_MONITOR_WINDOW_SECONDS = W


@pytest.fixture
def environments(db):
    Environment.objects.create(
        name="staging", required_approvals=0, gates=[], deploy_group="staging-deployers"
    )
    return Environment.objects.create(
        name="production", required_approvals=1, reviewer_group="reviewers", gates=[GATE]
    )


def ready(client, model: str) -> int:
    number = upload_version(client, model, {"m.bin": f"weights {model}".encode()})
    ModelVersion.objects.filter(model__name=model, number=number).update(
        state="ready", scan_status="clean", package_state="ready"
    )
    return number


def past_window(back: int):
    return aggregation.window_start(timezone.now()) - timedelta(seconds=back * W)


def serve(ingest: APIClient, version: int, start, n: int, *, errors: int = 0,
          latency: float = 5.0, prefix: str) -> None:  # fmt: skip
    """n records of `version` in staging in the window from `start`; the first `errors` fail."""
    records = [
        {
            "version": version,
            "environment": "staging",
            "request_id": f"{prefix}-{i}",
            "at": (start + timedelta(seconds=i * (W - 1) / n)).isoformat(),
            "inputs": {"x": i / n},
            "outputs": {"prediction": i % 2},
            "latency_ms": latency,
            "error": "model crashed" if i < errors else None,
        }
        for i in range(n)
    ]
    response = ingest.post("/api/v1/monitoring/predictions/", {"records": records}, format="json")
    assert response.status_code == 202, response.content


def ask(api, number: int) -> dict:
    response = api.post(
        f"/api/v1/models/fraud/versions/{number}/promotions/",
        {"environment": "production", "comment": "ship it"},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def healthy_in(promotion: dict) -> dict:
    return next(g for g in promotion["gates"] if g["type"] == "healthy_in")


def deployer(model: str, username: str = "serving-bot"):
    """A member of staging's deploy group (a contributor of the default team writes; the
    group vouches) and an ingest client with its token bound to staging."""
    user = User.objects.create_user(username)
    user.groups.add(Group.objects.get_or_create(name="staging-deployers")[0])
    join_team(user, "contributor")
    token, secret = create_token(user, "s", ["ingest"], model=model, environment="staging")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return token, client


def test_healthy_in_blocks_production_until_staging_traffic_is_healthy(
    alice, alice_api, bob, model, environments
):
    old, candidate = ready(alice_api, model), ready(alice_api, model)
    token, client = deployer(model)
    by = f", reported by ingest tokens #{token.pk} 's' (serving-bot)"
    # Another version's traffic does not count for the candidate.
    serve(client, old, past_window(9), 2000, prefix="old")

    first = ask(alice_api, candidate)
    assert first["state"] == "blocked"
    assert healthy_in(first)["detail"] == (
        "served 0 of 500 requests in staging; no error rate yet; no alerts firing"
    )
    assert first["status_reason"].startswith("healthy_in: served 0 of 500 requests in staging")

    # Traffic counts once aggregated; 300 requests are not enough.
    serve(client, candidate, past_window(8), 300, prefix="a")
    aggregation.aggregate()
    second = ask(alice_api, candidate)
    assert second["state"] == "blocked"
    assert healthy_in(second)["detail"] == (
        f"served 300 of 500 requests in staging{by}; error rate 0.00% (max 1.00%); no alerts firing"
    )

    # Enough requests, too many errors.
    serve(client, candidate, past_window(7), 300, errors=9, prefix="b")
    aggregation.aggregate()
    third = ask(alice_api, candidate)
    assert third["state"] == "blocked"
    assert (
        f"served 600 of 500 requests in staging{by}; error rate 1.50% (max 1.00%)"
        in (healthy_in(third)["detail"])
    )

    # Errors diluted, but a latency alert fires in staging.
    monitor = alice_api.post(
        "/api/v1/monitors/",
        {"model": model, "environment": "staging", "metric": "latency_ms.p95", "op": ">",
         "value": 200, "window": W, "min_samples": 100},
        format="json",
    ).json()  # fmt: skip
    slow = past_window(6)
    serve(client, candidate, slow, 600, latency=350.0, prefix="c")
    aggregation.aggregate()
    assert alerts.evaluate_monitors(slow + timedelta(seconds=W + 1))["fired"] == 1
    fourth = ask(alice_api, candidate)
    assert fourth["state"] == "blocked"
    detail = healthy_in(fourth)["detail"]
    assert detail == (
        f"served 1200 of 500 requests in staging{by}; error rate 0.75% (max 1.00%); "
        "1 alert firing: latency_ms.p95 > 200 (value 350)"
    )

    # The review page shows why, with the evidence.
    page = Client()
    page.force_login(bob)
    html = page.get(f"/promotions/{fourth['id']}/").content.decode()
    assert "healthy_in" in html
    assert "served 1200 of 500 requests in staging" in html
    assert "1 alert firing: latency_ms.p95 &gt; 200 (value 350)" in html

    # Latency back to normal: the alert resolves and the gate passes.
    fast = past_window(5)
    serve(client, candidate, fast, 600, latency=20.0, prefix="d")
    aggregation.aggregate()
    assert alerts.evaluate_monitors(fast + timedelta(seconds=W + 1))["resolved"] == 1
    fifth = ask(alice_api, candidate)
    assert fifth["state"] == "pending", fifth["status_reason"]
    assert healthy_in(fifth)["passed"]
    assert healthy_in(fifth)["detail"] == (
        f"served 1800 of 500 requests in staging{by}; error rate 0.50% (max 1.00%); "
        "no alerts firing"
    )
    assert healthy_in(fifth)["tokens"] == [{"id": token.pk, "name": "s", "user": "serving-bot"}]

    # Approved, but the gate is checked again right before the alias moves: an alert
    # that fired since blocks the execution.
    assert review(client_for(bob), fifth["id"]).status_code == 201
    serve(client, candidate, past_window(4), 600, latency=500.0, prefix="e")
    aggregation.aggregate()
    assert alerts.evaluate_monitors(past_window(4) + timedelta(seconds=W + 1))["fired"] == 1
    run_queued()
    blocked = Promotion.objects.get(pk=fifth["id"])
    assert blocked.state == "blocked" and "1 alert firing" in blocked.status_reason
    firing = alice_api.get("/api/v1/alerts/", {"state": "firing"}).json()["results"]
    assert [a["monitor"] for a in firing] == [monitor["id"]]


@pytest.mark.parametrize(
    "gate",
    [
        {"type": "healthy_in"},
        {"type": "healthy_in", "environment": "Staging!"},
        {"type": "healthy_in", "environment": "staging", "min_requests": -1},
        {"type": "healthy_in", "environment": "staging", "max_error_rate": 2},
        {"type": "healthy_in", "environment": "staging", "no_firing_alerts": "yes"},
        {"type": "healthy_in", "environment": "staging", "typo": 1},
    ],
)
def test_a_bad_healthy_in_gate_gets_400(admin_api, environments, gate):
    response = admin_api.patch("/api/v1/environments/production/", {"gates": [gate]}, format="json")
    assert response.status_code == 400, response.content
    assert "gates[0]" in response.json()["error"]["message"]
    assert Environment.objects.get(name="production").gates == [GATE]


def test_traffic_the_requester_could_make_up_is_not_evidence(
    alice, alice_api, admin_user, model, environments
):
    """A contributor mints ingest tokens for their own version and posts staging traffic
    for a version that never ran there: none of it counts, and the gate says so."""
    candidate = ready(alice_api, model)
    attacks = [
        create_token(alice, "own", ["ingest"], model=model, environment="staging"),  # creator
        create_token(alice, "unbound", ["ingest"], model=model),  # no environment
        create_token(admin_user, "elsewhere", ["ingest"], model=model, environment="dev"),
    ]
    _, bystander = deployer(model, "contractor")
    Group.objects.get(name="staging-deployers").user_set.remove(
        User.objects.get(username="contractor")
    )
    for index, (_, secret) in enumerate(attacks):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        env = "dev" if index == 2 else "staging"
        records = [
            {"version": candidate, "environment": env, "request_id": f"x{index}-{i}",
             "at": (past_window(3) + timedelta(seconds=i / 20)).isoformat(),
             "inputs": {"x": 0.5}, "outputs": {"prediction": 1}, "latency_ms": 1.0}
            for i in range(600)
        ]  # fmt: skip
        posted = client.post("/api/v1/monitoring/predictions/", {"records": records}, format="json")
        assert posted.status_code == 202, posted.content
    serve(bystander, candidate, past_window(2), 600, prefix="not-a-deployer")
    aggregation.aggregate()
    gate = healthy_in(ask(alice_api, candidate))
    assert not gate["passed"] and gate["tokens"] == []
    assert gate["detail"].startswith(
        "served 0 of 500 requests in staging; 1800 requests not counted: their ingest tokens "
        "are not bound to staging by an admin or its deploy group"
    ), gate["detail"]

    # The deployer's traffic counts; revoking its token withdraws the evidence.
    token, client = deployer(model)
    serve(client, candidate, past_window(1), 600, prefix="real")
    aggregation.aggregate()
    assert healthy_in(ask(alice_api, candidate))["passed"]
    token.revoked_at = timezone.now()
    token.save()
    assert not healthy_in(ask(alice_api, candidate))["passed"]
