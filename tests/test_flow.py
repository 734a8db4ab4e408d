"""The whole path with a real worker on the configured broker: upload → ready → review →
promoted, with the alias, the audit log, Git tags, `gto show` and a signed webhook."""

import hashlib
import hmac
import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import joblib
import pytest
from sklearn.linear_model import LogisticRegression

from registry.models import Environment, ModelVersion, Promotion

from .conftest import sha256_of, token_for, wait_for
from .receivers import Receiver


def sklearn_files() -> dict[str, bytes]:
    model = LogisticRegression().fit([[0, 0], [1, 1], [0, 1], [1, 0]], [0, 1, 1, 0])
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return {
        "model.joblib": buffer.getvalue(),
        "README.md": b"# Fraud\n\nA card.",
        "requirements.txt": b"scikit-learn\njoblib\n",
    }


class Api:
    def __init__(self, base: str, token: str):
        self.client = httpx.Client(
            base_url=f"{base}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=60
        )

    def __getattr__(self, name):
        return getattr(self.client, name)


def push(api: Api, model: str, files: dict[str, bytes], metrics: dict) -> int:
    created = api.post(
        f"/models/{model}/versions/",
        json={
            "metrics": metrics,
            "files": [
                {"path": p, "size": len(d), "sha256": sha256_of(d)} for p, d in files.items()
            ],
        },
    )
    assert created.status_code == 201, created.text
    for upload in created.json()["uploads"]:
        api.put(upload["url"], content=files[upload["path"]]).raise_for_status()
    number = created.json()["version"]
    api.post(f"/models/{model}/versions/{number}/finalize/").raise_for_status()
    return number


def settled(number: int) -> str | None:
    state = ModelVersion.objects.get(number=number).state
    return state if state in ("ready", "failed", "quarantined") else None


@pytest.fixture
def git_dir(tmp_path, settings):
    settings.MODELGATE_GIT_DIR = tmp_path / "git"
    settings.MODELGATE_WEBHOOK_ALLOW_PRIVATE = True
    return settings.MODELGATE_GIT_DIR


def test_upload_review_and_promotion_end_to_end(
    alice, bob, admin_user, live_server, celery_worker, git_dir
):
    alice_api = Api(live_server.url, token_for(alice))
    bob_api = Api(live_server.url, token_for(bob))
    admin_api = Api(live_server.url, token_for(admin_user))
    admin_api.post(
        "/environments/",
        json={
            "name": "production",
            "required_approvals": 1,
            "reviewer_group": "reviewers",
            "gates": [
                {"type": "scan_clean"},
                {"type": "package_ready"},
                {"type": "metric_not_worse", "metric": "accuracy"},
            ],
        },
    ).raise_for_status()
    with Receiver() as receiver:
        hook = admin_api.post(
            "/webhooks/",
            json={"url": receiver.url, "events": ["promotion.promoted", "version.ready"]},
        )
        assert hook.status_code == 201, hook.text
        secret = hook.json()["secret"]

        alice_api.post("/models/", json={"name": "fraud"}).raise_for_status()
        number = push(alice_api, "fraud", sklearn_files(), {"accuracy": 0.91})
        assert wait_for(lambda: settled(number), timeout=120) == "ready"
        version = alice_api.get(f"/models/fraud/versions/{number}/").json()
        assert version["scan"]["status"] == "clean"
        assert version["package"]["state"] == "ready"
        assert version["model_card"].startswith("# Fraud")

        promotion = alice_api.post(
            f"/models/fraud/versions/{number}/promotions/",
            json={"environment": "production", "comment": "v1"},
        ).json()
        assert promotion["state"] == "pending", promotion
        own = alice_api.post(
            f"/promotions/{promotion['id']}/reviews/",
            json={"decision": "approve", "comment": "mine"},
        )
        assert own.status_code == 403
        approved = bob_api.post(
            f"/promotions/{promotion['id']}/reviews/",
            json={"decision": "approve", "comment": "good to go"},
        )
        assert approved.status_code == 201, approved.text
        assert wait_for(lambda: Promotion.objects.get().state == "promoted", timeout=60)
        assert alice_api.get("/models/fraud/versions/@production/").json()["version"] == number

        events = [e["type"] for e in alice_api.get("/events/?model=fraud").json()["results"]]
        for expected in [
            "model.created",
            "version.created",
            "version.finalized",
            "version.ready",
            "promotion.requested",
            "promotion.reviewed",
            "promotion.approved",
            "alias.moved",
            "promotion.promoted",
        ]:
            assert expected in events, expected

        delivered = wait_for(lambda: receiver.of_type("promotion.promoted"), timeout=60)
        sent = delivered[0]
        expected = "sha256=" + hmac.new(secret.encode(), sent["body"], hashlib.sha256).hexdigest()
        assert sent["headers"]["X-Modelgate-Signature"] == expected
        assert sent["json"]["data"]["environment"] == "production"

        def delivery_states():
            log = admin_api.get(f"/webhooks/{hook.json()['id']}/deliveries/").json()
            return {d["state"] for d in log["results"]}

        assert wait_for(lambda: delivery_states() == {"delivered"}, timeout=30)

    tags = wait_for(
        lambda: _tags(git_dir) >= {"fraud@v1.0.0", "fraud#production#1"} and _tags(git_dir),
        timeout=60,
    )
    assert "fraud#production#1" in tags
    document = (Path(git_dir) / "models" / "fraud" / "1.yaml").read_text()
    assert version["files"][0]["sha256"] in document

    shown = subprocess.run(
        [str(Path(sys.executable).parent / "gto"), "show", "-r", str(git_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    registry = json.loads(shown.stdout)
    assert registry["fraud"]["version"] == "v1.0.0"
    assert registry["fraud"]["stage"]["production"] == "v1.0.0"


def _tags(git_dir) -> set[str]:
    if not (Path(git_dir) / ".git").exists():
        return set()
    out = subprocess.run(["git", "-C", str(git_dir), "tag"], capture_output=True, text=True)
    return set(out.stdout.split())


def test_the_environment_policy_and_gates_hold_over_http(
    alice, live_server, celery_worker, git_dir
):
    Environment.objects.create(
        name="production",
        required_approvals=1,
        gates=[{"type": "metric", "metric": "accuracy", "op": ">=", "value": 0.95}],
    )
    api = Api(live_server.url, token_for(alice))
    api.post("/models/", json={"name": "weak"}).raise_for_status()
    number = push(api, "weak", sklearn_files(), {"accuracy": 0.7})
    assert wait_for(lambda: settled(number), timeout=120) == "ready"
    blocked = api.post(
        f"/models/weak/versions/{number}/promotions/", json={"environment": "production"}
    ).json()
    assert blocked["state"] == "blocked"
    assert "accuracy = 0.7 fails >= 0.95" in blocked["status_reason"]


class _Exploit:
    """Pickles to a call of os.system; the test only ever scans it, never loads it."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


def test_an_unsafe_pickle_is_quarantined_and_cannot_be_promoted(
    alice, live_server, celery_worker, git_dir, tmp_path
):
    import pickle

    canary = tmp_path / "canary"
    Environment.objects.create(
        name="production", required_approvals=1, gates=[{"type": "scan_clean"}]
    )
    api = Api(live_server.url, token_for(alice))
    api.post("/models/", json={"name": "trojan"}).raise_for_status()
    payload = pickle.dumps(_Exploit(f"touch {canary}"), protocol=4)
    number = push(api, "trojan", {"model.pkl": payload}, {"accuracy": 0.99})
    assert wait_for(lambda: settled(number), timeout=120) == "quarantined"
    scan = api.get(f"/models/trojan/versions/{number}/").json()["scan"]
    assert scan["status"] == "unsafe"
    assert any(f["name"] == "system" and f["file"] == "model.pkl" for f in scan["findings"])
    refused = api.post(
        f"/models/trojan/versions/{number}/promotions/", json={"environment": "production"}
    )
    assert refused.status_code == 409
    assert "quarantined" in refused.json()["error"]["message"]
    assert not canary.exists()
