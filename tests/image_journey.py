"""A minimal runtime journey over HTTP, for the containers of tests/test_image.py.

Stand-in until tests/runtime_journey.py (`run_journey`) is shared: health, a tiny
non-pickle model pushed through the upload API, processed to ready by the worker,
promoted to staging by an author and a reviewer, labelled predictions ingested and
aggregated by the worker into live accuracy. `setup` runs Python in the web container
(users and the staging policy exist only server-side).
"""

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from .api_flows import promote_and_wait
from .processes import wait_until

SETUP = """
from django.contrib.auth.models import Group, User
from registry.models import Environment
for name, group in (("alice", "contributors"), ("bob", "reviewers")):
    user = User.objects.create_user(name, password=name + "-password-1")
    user.groups.add(Group.objects.get_or_create(name=group)[0])
Environment.objects.create(name="staging", required_approvals=1, reviewer_group="reviewers")
"""
MODEL = json.dumps({"kind": "threshold", "feature": "x", "cut": 0.5}).encode()
RECORDS = 40  # every fourth prediction is wrong: live accuracy 0.75


def token(http: httpx.Client, username: str, **extra) -> str:
    body = {"username": username, "password": f"{username}-password-1", "name": "journey"}
    minted = http.post("/api/v1/auth/tokens/", json={**body, **extra})
    assert minted.status_code == 201, minted.text
    return minted.json()["token"]


def run_minimal_journey(
    base_url: str, setup: Callable[[str], None], aggregate: Callable[[], None]
) -> dict:
    """Returns the monitoring window the ingested predictions landed in."""
    with httpx.Client(base_url=base_url, timeout=60) as http:
        assert http.get("/healthz").status_code == 200
        setup(SETUP)
        alice = {"Authorization": f"Bearer {token(http, 'alice')}"}
        bob = {"Authorization": f"Bearer {token(http, 'bob')}"}

        created = http.post("/api/v1/models/", json={"name": "tiny"}, headers=alice)
        assert created.status_code == 201, created.text
        sha256 = hashlib.sha256(MODEL).hexdigest()
        declared = http.post(
            "/api/v1/models/tiny/versions/",
            json={"files": [{"path": "model.json", "size": len(MODEL), "sha256": sha256}]},
            headers=alice,
        )
        assert declared.status_code == 201, declared.text
        put = http.put(
            "/api/v1/models/tiny/versions/1/files/model.json",
            content=MODEL,
            headers={
                **alice,
                "Content-Range": f"bytes 0-{len(MODEL) - 1}/{len(MODEL)}",
                "Content-Type": "application/octet-stream",
            },
        )
        assert put.status_code == 200, put.text
        finalized = http.post("/api/v1/models/tiny/versions/1/finalize/", headers=alice)
        assert finalized.status_code == 200, finalized.text

        def processed():
            body = http.get("/api/v1/models/tiny/versions/1/", headers=alice).json()
            return body if body["state"] in ("ready", "failed") else None

        version = wait_until(processed, 180, "the worker to process tiny/1")
        assert version["state"] == "ready", version

        state = promote_and_wait(http, "", "tiny/1", "staging", alice, bob)
        assert state == "promoted"
        staged = http.get("/api/v1/models/tiny/versions/@staging/", headers=alice)
        assert staged.status_code == 200 and staged.json()["version"] == 1, staged.text

        ingest = {
            "Authorization": "Bearer "
            + token(http, "alice", scopes=["ingest"], model="tiny", environment="staging")
        }
        at = datetime.now(UTC).isoformat().replace("+00:00", "Z")  # one window for all
        predictions = [
            {
                "model": "tiny",
                "version": 1,
                "request_id": f"r{i}",
                "at": at,
                "inputs": {"x": i / RECORDS},
                "outputs": {"prediction": i % 2},
                "latency_ms": 2.0,
            }
            for i in range(RECORDS)
        ]
        sent = http.post(
            "/api/v1/monitoring/predictions/", json={"records": predictions}, headers=ingest
        )
        assert sent.status_code == 202, sent.text
        labels = [
            {"request_id": f"r{i}", "label": (1 - i % 2) if i % 4 == 0 else i % 2}
            for i in range(RECORDS)
        ]
        fed = http.post("/api/v1/monitoring/feedback/", json={"records": labels}, headers=ingest)
        assert fed.status_code == 202, fed.text

        aggregate()

        def window():
            body = http.get(
                "/api/v1/models/tiny/versions/1/monitoring/",
                params={"environment": "staging"},
                headers=alice,
            ).json()
            found = [w for w in body["windows"] if w["labelled"] == RECORDS]
            return found[0] if found else None

        found = wait_until(window, 60, "the worker to aggregate the window")
        assert found["requests"] == RECORDS and found["errors"] == 0
        assert found["live_metrics"]["accuracy"] == 0.75
        return found
