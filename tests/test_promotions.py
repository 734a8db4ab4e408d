"""Promotions: policies, four eyes, gates at request time and again before execution."""

import pytest

from registry.models import Alias, Environment, Event, Job, ModelVersion, Promotion
from registry.services import jobs

from .conftest import client_for, upload_version

PRODUCTION_GATES = [
    {"type": "scan_clean"},
    {"type": "package_ready"},
    {"type": "metric_not_worse", "metric": "accuracy"},
]


@pytest.fixture
def environments(db):
    Environment.objects.create(
        name="staging",
        required_approvals=0,
        gates=[{"type": "scan_clean"}, {"type": "package_ready"}],
    )
    return Environment.objects.create(
        name="production", required_approvals=1, reviewer_group="reviewers", gates=PRODUCTION_GATES
    )


def ready(client, model, accuracy, scan="clean", package="ready"):
    number = upload_version(
        client, model, {"m.bin": f"acc={accuracy}".encode()}, metrics={"accuracy": accuracy}
    )
    ModelVersion.objects.filter(number=number).update(
        state="ready",
        scan_status=scan,
        package_state=package,
        pipeline={"verify": "done", "scan": "done", "extract": "done", "package": "done"},
    )
    return number


def request(client, model, number, environment="production", comment="ship it"):
    return client.post(
        f"/api/v1/models/{model}/versions/{number}/promotions/",
        {"environment": environment, "comment": comment},
        format="json",
    )


def review(client, promotion_id, decision="approve", comment="looks good"):
    return client.post(
        f"/api/v1/promotions/{promotion_id}/reviews/",
        {"decision": decision, "comment": comment},
        format="json",
    )


def run_queued(kind="promote"):
    for ref_id in Job.objects.filter(kind=kind, state="queued").values_list("ref_id", flat=True):
        jobs.run(kind, ref_id)


def test_a_reviewer_approval_promotes_and_the_requester_cannot_approve(
    alice_api, bob, model, environments
):
    number = ready(alice_api, model, 0.9)
    response = request(alice_api, model, number)
    assert response.status_code == 201
    promotion = response.json()
    assert promotion["state"] == "pending" and promotion["requested_by"] == "alice"
    assert [g["passed"] for g in promotion["gates"]] == [True, True, True]

    own = review(alice_api, promotion["id"])
    assert own.status_code == 403
    bob_api = client_for(bob)
    approved = review(bob_api, promotion["id"], comment="metrics hold up")
    assert approved.status_code == 201 and approved.json()["state"] == "approved"
    assert approved.json()["reviews"][0]["reviewer"] == "bob"

    run_queued()
    done = alice_api.get(f"/api/v1/promotions/{promotion['id']}/").json()
    assert done["state"] == "promoted" and done["current_version"] == number
    assert done["sequence"] == 1
    assert Alias.objects.get(name="production").version.number == number
    types = list(
        Event.objects.filter(type__startswith="promotion.")
        .order_by("id")
        .values_list("type", flat=True)
    )
    assert types == [
        "promotion.requested",
        "promotion.reviewed",
        "promotion.approved",
        "promotion.promoted",
    ]


def test_a_non_member_and_a_second_review_are_refused(
    alice_api, bob, carol, reader, model, environments
):
    Environment.objects.filter(name="production").update(required_approvals=2)
    promotion = request(alice_api, model, ready(alice_api, model, 0.9)).json()
    assert review(client_for(reader), promotion["id"]).status_code == 403
    bob_api = client_for(bob)
    assert review(bob_api, promotion["id"]).status_code == 201
    second = review(bob_api, promotion["id"])
    assert second.status_code == 409
    assert Promotion.objects.get().state == "pending"  # one of two approvals so far
    assert review(client_for(carol), promotion["id"]).json()["state"] == "approved"


def test_a_review_needs_a_comment_and_a_decision(alice_api, bob, model, environments):
    promotion = request(alice_api, model, ready(alice_api, model, 0.9)).json()
    bob_api = client_for(bob)
    assert review(bob_api, promotion["id"], comment="  ").status_code == 400
    assert review(bob_api, promotion["id"], decision="maybe").status_code == 400
    assert not Promotion.objects.get().reviews.exists()


def test_a_rejection_ends_the_promotion(alice_api, bob, model, environments):
    promotion = request(alice_api, model, ready(alice_api, model, 0.9)).json()
    rejected = review(client_for(bob), promotion["id"], "reject", "accuracy drop on segment B")
    assert rejected.json()["state"] == "rejected"
    assert "segment B" in rejected.json()["status_reason"]
    assert not Alias.objects.filter(name="production").exists()


def test_failing_gates_block_at_request_time_with_the_reason(alice_api, model, environments):
    unsafe = ready(alice_api, model, 0.9, scan="unsafe")
    ModelVersion.objects.filter(number=unsafe).update(
        scan_findings=[
            {
                "file": "m.bin",
                "offset": 2,
                "module": "os",
                "name": "system",
                "severity": "unsafe",
                "detail": "imports os.system",
            }
        ]
    )
    response = request(alice_api, model, unsafe)
    assert response.status_code == 201
    body = response.json()
    assert body["state"] == "blocked"
    assert "scan_clean: scan is unsafe: os.system" in body["status_reason"]
    unpackaged = ready(alice_api, model, 0.9, package="building")
    assert request(alice_api, model, unpackaged).json()["state"] == "blocked"


def test_a_scan_short_of_clean_blocks_even_without_a_scan_gate(alice_api, model, environments):
    Environment.objects.filter(name="production").update(gates=[])
    number = ready(alice_api, model, 0.9, scan="unverified")
    assert request(alice_api, model, number).json()["state"] == "blocked"


def test_metric_not_worse_compares_with_the_live_version(alice_api, bob, model, environments):
    first = ready(alice_api, model, 0.9)
    promotion = request(alice_api, model, first).json()
    review(client_for(bob), promotion["id"])
    run_queued()
    worse = ready(alice_api, model, 0.85)
    blocked = request(alice_api, model, worse).json()
    assert blocked["state"] == "blocked"
    assert "worse than live version 1 (0.9)" in blocked["status_reason"]
    better = ready(alice_api, model, 0.95)
    assert request(alice_api, model, better).json()["state"] == "pending"


def test_gates_are_checked_again_before_execution(alice_api, bob, model, environments):
    number = ready(alice_api, model, 0.9)
    promotion = request(alice_api, model, number).json()
    review(client_for(bob), promotion["id"])
    ModelVersion.objects.filter(number=number).update(scan_status="unsafe")  # e.g. a rescan
    run_queued()
    final = Promotion.objects.get()
    assert final.state == "blocked"
    assert "scan is unsafe" in final.status_reason
    assert not Alias.objects.filter(name="production").exists()


def test_an_environment_without_approvals_promotes_at_once(alice_api, model, environments):
    number = ready(alice_api, model, 0.9)
    assert request(alice_api, model, number, "staging").json()["state"] == "approved"
    run_queued()
    assert Alias.objects.get(name="staging").version.number == number


def test_running_the_promotion_job_twice_promotes_once(alice_api, model, environments):
    number = ready(alice_api, model, 0.9)
    promotion = request(alice_api, model, number, "staging").json()
    run_queued()
    Job.objects.filter(kind="promote").update(state="queued")  # a duplicate message
    run_queued()
    jobs.run("promote", promotion["id"])
    assert Event.objects.filter(type="promotion.promoted").count() == 1
    assert Promotion.objects.get().sequence == 1


def test_cancel_is_for_the_requester_or_an_admin_while_pending(
    alice_api, bob, admin_api, model, environments
):
    promotion = request(alice_api, model, ready(alice_api, model, 0.9)).json()
    url = f"/api/v1/promotions/{promotion['id']}/cancel/"
    assert client_for(bob).post(url).status_code == 403
    assert alice_api.post(url).json()["state"] == "cancelled"
    assert alice_api.post(url).status_code == 409
    again = request(alice_api, model, promotion["version"]).json()
    assert admin_api.post(f"/api/v1/promotions/{again['id']}/cancel/").status_code == 200


def test_one_open_promotion_per_version_and_environment(alice_api, model, environments):
    number = ready(alice_api, model, 0.9)
    assert request(alice_api, model, number).status_code == 201
    assert request(alice_api, model, number).status_code == 409


def test_only_ready_versions_and_known_environments(alice_api, model, environments):
    number = upload_version(alice_api, model, {"m.bin": b"x"})
    assert request(alice_api, model, number).status_code == 409
    ready_number = ready(alice_api, model, 0.9)
    assert request(alice_api, model, ready_number, "moon").status_code == 404
    assert (
        alice_api.post(
            f"/api/v1/models/{model}/versions/{ready_number}/promotions/",
            {"env": "production"},
            format="json",
        ).status_code
        == 400
    )


def test_promotions_are_listed_with_filters(alice_api, model, environments):
    number = ready(alice_api, model, 0.9)
    request(alice_api, model, number)
    request(alice_api, model, number, "staging")
    listing = alice_api.get("/api/v1/promotions/?state=pending&environment=production").json()
    assert [(p["environment"], p["state"]) for p in listing["results"]] == [
        ("production", "pending")
    ]
    assert alice_api.get("/api/v1/promotions/?state=sideways").status_code == 400


def test_environments_are_managed_by_admins_only(alice_api, admin_api, db):
    body = {
        "name": "canary",
        "required_approvals": 1,
        "gates": [{"type": "metric", "metric": "accuracy", "op": ">=", "value": 0.9}],
    }
    assert alice_api.post("/api/v1/environments/", body, format="json").status_code == 403
    created = admin_api.post("/api/v1/environments/", body, format="json")
    assert created.status_code == 201 and created.json()["allow_self_approval"] is False
    assert alice_api.get("/api/v1/environments/").json()[0]["name"] == "canary"
    bad = admin_api.patch(
        "/api/v1/environments/canary/",
        {"gates": [{"type": "metric", "metric": "a"}]},
        format="json",
    )
    assert bad.status_code == 400
    assert (
        admin_api.patch(
            "/api/v1/environments/canary/", {"required_approvals": 2}, format="json"
        ).json()["required_approvals"]
        == 2
    )
