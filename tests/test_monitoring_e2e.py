"""Monitoring end to end, with real processes only: a scikit-learn model pushed with the CLI
(baseline, target, explanations), promoted to staging, its package's serve.py capturing
predictions into a gunicorn registry whose Celery beat aggregates windows and evaluates
monitors; traffic shifted on one feature fires a drift alert once, delivered as a webhook,
which resolves when traffic is back to normal; feedback labels give live accuracy beside
the offline one."""

import csv
import json
import time

import httpx
import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression

from registry.models import Alert, Alias, Environment, Event
from registry.services.tokens import create_token

from .conftest import token_for, wait_for
from .receivers import Receiver
from .test_baseline import cli
from .test_capture import Serving, unpack

W = 4  # seconds per window: each phase of traffic fits in one
FEATURES = ["signal", "noise", "amount"]


def training_data(tmp_path):
    rng = np.random.default_rng(3)
    rows = 3000
    signal, noise, amount = rng.normal(size=rows), rng.normal(size=rows), rng.normal(50, 10, rows)
    label = (signal > 0).astype(int)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    model = LogisticRegression().fit(np.column_stack([signal, noise, amount]), label)
    joblib.dump(model, model_dir / "model.joblib")
    (model_dir / "requirements.txt").write_text("scikit-learn\n")
    data = tmp_path / "train.csv"
    with data.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow([*FEATURES, "label"])
        writer.writerows(zip(signal, noise, amount, label, strict=True))
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"accuracy": 0.97}))
    return model_dir, data, metrics


def test_drift_on_one_feature_fires_one_alert_delivered_as_a_webhook_and_resolves(
    stack, alice, admin_user, tmp_path, settings, monkeypatch
):
    settings.MODELGATE_WEBHOOK_ALLOW_PRIVATE = True  # the receiver is on 127.0.0.1
    settings.MODELGATE_MONITOR_WINDOW_SECONDS = W
    monkeypatch.setenv("MODELGATE_MONITOR_WINDOW_SECONDS", str(W))  # for the processes
    monkeypatch.setenv("MODELGATE_MONITOR_SECONDS", "1")
    redis = stack.redis()
    web = stack.web(redis.url)
    stack.worker(redis.url)
    Environment.objects.create(name="staging", required_approvals=0, gates=[])

    def client(user) -> httpx.Client:
        return httpx.Client(
            base_url=f"{web.url}/api/v1",
            headers={"Authorization": f"Bearer {token_for(user)}"},
            timeout=60,
        )

    api, admin = client(alice), client(admin_user)
    api.post("/models/", json={"name": "churn"}).raise_for_status()
    model_dir, data, metrics = training_data(tmp_path)
    pushed = cli(web.url, token_for(alice), "push", model_dir, "-m", "churn", "--baseline", data,
                 "--target", "label", "--explain", "--metrics", metrics, "--wait")  # fmt: skip
    assert pushed.stdout.strip().splitlines()[0] == "churn/1"
    version = api.get("/models/churn/versions/1/").json()
    assert version["state"] == "ready" and version["baseline"]["columns"] == FEATURES
    assert version["explanations"]["method"] == "permutation_importance"
    promoted = api.post("/models/churn/versions/1/promotions/", json={"environment": "staging"})
    assert promoted.status_code == 201, promoted.text
    wait_for(lambda: Alias.objects.filter(model__name="churn", name="staging").exists(), 60)

    receiver = Receiver().__enter__()
    hook = admin.post(
        "/webhooks/",
        json={"url": receiver.url, "events": ["monitor.alert.fired", "monitor.alert.resolved"]},
    )
    assert hook.status_code == 201, hook.text
    monitor = api.post(
        "/monitors/",
        json={"model": "churn", "environment": "staging", "metric": "drift.psi.max",
              "op": ">", "value": 0.2, "window": W, "min_samples": 200},
    )  # fmt: skip
    assert monitor.status_code == 201, monitor.text

    folder = unpack(api, "churn", 1, tmp_path / "package")
    _, ingest = create_token(alice, "serving", ["ingest"], model="churn", environment="staging")
    serving = Serving(
        folder,
        MODELGATE_URL=web.url,
        MODELGATE_INGEST_TOKEN=ingest,
        MODELGATE_ENVIRONMENT="staging",
        MODELGATE_SPOOL_DIR=str(tmp_path / "spool"),
        MODELGATE_CAPTURE_INTERVAL="0.2",
    )
    rng = np.random.default_rng(11)
    windows_of = {}

    def phase(name: str, shift: float = 0.0) -> list[tuple[str, int]]:
        """300 rows in one window (sent just after it opens); (request id, true label)."""
        while time.time() % W > 0.3:
            time.sleep(0.02)
        windows_of[name] = int(time.time()) // W * W
        sent = []
        for _ in range(10):
            rows = np.column_stack(
                [rng.normal(size=30), rng.normal(size=30), rng.normal(50 + shift, 10, 30)]
            )
            request_id = serving.predict(rows.round(5).tolist()).headers["X-Request-ID"]
            sent += [(f"{request_id}:{i}", int(row[0] > 0)) for i, row in enumerate(rows)]
        assert int(time.time()) // W * W == windows_of[name], "a phase spilled over"
        return sent

    def window(name: str) -> dict:
        start = windows_of[name]
        body = api.get(
            "/models/churn/versions/1/monitoring/", params={"environment": "staging"}
        ).json()
        found = [w for w in body["windows"] if w["start"].startswith(_iso(start))]
        return found[0] if found else {}

    def alerts(state=None) -> list[dict]:
        params = {"model": "churn", **({"state": state} if state else {})}
        return api.get("/alerts/", params=params).json()["results"]

    try:
        # 1. the training distribution, with ground truth for every prediction
        normal = phase("normal")
        labels = [{"request_id": rid, "label": label} for rid, label in normal]
        fed = httpx.post(
            f"{web.url}/api/v1/monitoring/feedback/",
            json={"records": labels},
            headers={"Authorization": f"Bearer {ingest}"},
        )
        assert fed.status_code == 202, fed.text
        first = wait_for(lambda: (w := window("normal")).get("labelled") == 300 and w, 30)
        assert first["requests"] == 300 and first["errors"] == 0
        assert {n: f["psi"] < 0.2 for n, f in first["drift"].items()} == dict.fromkeys(
            FEATURES, True
        )
        assert first["live_metrics"]["accuracy"] > 0.9
        assert first["offline_metrics"] == {"accuracy": 0.97}  # side by side
        assert set(first["predictions"]["values"]) == {"0", "1", "(other)"}
        time.sleep(W)  # the window completes and is evaluated: no drift, no alert
        assert alerts() == []

        # 2. `amount` shifted by 2.5 standard deviations, for two windows
        phase("shifted", shift=25)
        fired = wait_for(lambda: alerts("firing"), timeout=W * 3)
        shifted = window("shifted")
        assert shifted["drift"]["amount"]["psi"] > 0.2 and shifted["drift"]["amount"]["drifted"]
        assert shifted["drift"]["amount"]["test"] == "chi2_homogeneity"
        assert shifted["drift"]["amount"]["p_value"] < 0.01
        assert shifted["drift"]["signal"]["psi"] < 0.2 and shifted["drift"]["noise"]["psi"] < 0.2
        assert [(a["monitor"], a["value"] > 0.2) for a in fired] == [(monitor.json()["id"], True)]
        assert fired[0]["detail"]["feature"] == "amount"
        wait_for(lambda: receiver.of_type("monitor.alert.fired"), timeout=30)

        phase("still shifted", shift=25)
        wait_for(lambda: window("still shifted").get("requests") == 300, timeout=W * 2)
        time.sleep(W + 1.5)  # evaluated again: still firing, not fired again
        assert len(alerts()) == 1 and alerts("firing")

        # 3. back to normal: the alert resolves, once
        phase("normal again")
        resolved = wait_for(lambda: alerts("resolved"), timeout=W * 3)
        assert resolved[0]["id"] == fired[0]["id"] and resolved[0]["resolved_at"]
        wait_for(lambda: receiver.of_type("monitor.alert.resolved"), timeout=30)
        time.sleep(1)
    finally:
        serving.stop()
        receiver.__exit__(None, None, None)

    assert Alert.objects.count() == 1
    assert Event.objects.filter(type="monitor.alert.fired").count() == 1
    assert Event.objects.filter(type="monitor.alert.resolved").count() == 1
    [delivered] = receiver.of_type("monitor.alert.fired")
    payload = delivered["json"]
    assert payload["model"] == "churn" and payload["data"]["feature"] == "amount"
    assert payload["data"]["metric"] == "drift.psi.max" and payload["data"]["value"] > 0.2
    assert "X-Modelgate-Signature" in delivered["headers"]
    assert len(receiver.of_type("monitor.alert.resolved")) == 1


def _iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))
