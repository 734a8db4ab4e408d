"""Monitoring, slice 2, through the API: windows with drift and live quality from ingested
records, monitors (who may manage them, validation) and alerts that fire once and resolve
once, as events."""

from datetime import timedelta

import numpy as np
import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from registry.client import profiling
from registry.models import Alert, Event, Monitor, MonitoringWindow
from registry.services.monitoring import aggregation, alerts
from registry.services.tokens import create_token

from .conftest import client_for, upload_version

W = 60  # the aggregation window of these tests, in seconds
PREDICTIONS = "/api/v1/monitoring/predictions/"
FEEDBACK = "/api/v1/monitoring/feedback/"


@pytest.fixture(autouse=True)
def _window(settings):
    settings.MODELGATE_MONITOR_WINDOW_SECONDS = W
    settings.MODELGATE_DRIFT_MIN_SAMPLES = 100


def baseline() -> dict:
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=2000), rng.normal(10, 2, size=2000)
    country = rng.choice(["fr", "de", "it"], size=2000, p=[0.5, 0.3, 0.2])
    return {
        "columns": ["a", "b", "country"],
        "features": {
            "a": profiling.profile_values(list(a), a),
            "b": profiling.profile_values(list(b), b),
            "country": profiling.profile_values(list(country)),
        },
        "prediction": profiling.profile_values([str(int(x > 0)) for x in a]),
    }


@pytest.fixture
def version(alice_api, model) -> int:
    files = {"model.pkl": b"not really a model"}
    return upload_version(alice_api, model, files, metrics={"accuracy": 0.9}, baseline=baseline())


@pytest.fixture
def ingest(alice, version) -> APIClient:
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {create_token(alice, 's', ['ingest'], model='fraud')[1]}"
    )
    return client


def iso(at) -> str:
    return at.isoformat().replace("+00:00", "Z")


def send(ingest: APIClient, start, n: int, *, shift: float = 0.0, error_every: int = 0,
         prefix: str = "r", version: int = 1, seed: int = 0) -> list[str]:  # fmt: skip
    """n records spread over the window starting at `start`, `a` shifted by `shift`."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        a = float(rng.normal() + shift)
        failed = bool(error_every) and i % error_every == 0
        records.append(
            {
                "version": version,
                "environment": "staging",
                "request_id": f"{prefix}-{i}",
                "at": iso(start + timedelta(seconds=(W - 1) * i / n)),
                # positional, as serve.py captures {"instances": [[...]]}: "0" is "a"
                "inputs": {"0": a, "b": float(rng.normal(10, 2)),
                           "country": str(rng.choice(["fr", "de", "it"], p=[0.5, 0.3, 0.2]))},
                "outputs": {"prediction": int(a > 0)},
                "latency_ms": float(i % 100),
                "error": "boom" if failed else None,
            }
        )  # fmt: skip
    for chunk in range(0, n, 1000):
        response = ingest.post(
            PREDICTIONS, {"records": records[chunk : chunk + 1000]}, format="json"
        )
        assert response.status_code == 202, response.content
    return [r["request_id"] for r in records]


def past_window(back: int):
    return aggregation.window_start(timezone.now()) - timedelta(seconds=back * W)


# --- windows and drift ----------------------------------------------------------------


def test_windows_hold_traffic_latency_drift_per_feature_and_live_accuracy(
    alice_api, reader_api, ingest, version
):
    normal, shifted = past_window(5), past_window(4)
    ids = send(ingest, normal, 600, error_every=50)
    send(ingest, shifted, 600, shift=1.5, prefix="s", seed=1)
    # ground truth for 200 of the normal window's predictions, 150 of them right
    records = [{"request_id": rid, "label": 1} for rid in ids[:200]]
    # and regression-style values for 100 of the shifted window's (predictions are 0 or 1)
    records += [{"request_id": f"s-{i}", "value": 0.5} for i in range(100)]
    response = ingest.post(FEEDBACK, {"records": records}, format="json")
    assert response.status_code == 202, response.content

    assert aggregation.aggregate() == {"windows": 2, "skipped": 0}
    body = reader_api.get(
        f"/api/v1/models/fraud/versions/{version}/monitoring/",
        {"environment": "staging", "since": iso(normal - timedelta(hours=1))},
    ).json()
    assert body["baseline"]["columns"] == ["a", "b", "country"]
    first, second = body["windows"]
    assert (first["start"], first["end"]) == (iso(normal), iso(normal + timedelta(seconds=W)))
    assert first["requests"] == 600 and first["errors"] == 12
    assert first["error_rate"] == pytest.approx(0.02)
    assert first["latency_ms"]["p50"] == pytest.approx(49.5, abs=1)
    assert first["latency_ms"]["p99"] == pytest.approx(99, abs=1)
    assert set(first["drift"]) == {"a", "b", "country"}
    for window in body["windows"]:
        for name, feature in window["drift"].items():
            assert feature["test"] == "chi2_homogeneity", name
            assert feature["n"] == window["requests"] - window["errors"]
            assert len(feature["live"]["counts" if name != "country" else "values"]) == len(
                feature["baseline"]["counts" if name != "country" else "values"]
            )
    assert all(f["psi"] < 0.1 and not f["drifted"] for f in first["drift"].values())
    assert second["drift"]["a"]["psi"] > 0.2 and second["drift"]["a"]["drifted"]
    assert second["drift"]["a"]["p_value"] < 0.01
    assert second["drift"]["b"]["psi"] < 0.1 and second["drift"]["country"]["psi"] < 0.1
    assert set(second["drift"]["country"]["live"]["values"]) == {"fr", "de", "it", "(other)"}
    # predictions in the baseline's categories; live accuracy beside the offline one
    assert set(first["predictions"]["values"]) == {"0", "1", "(other)"}
    labelled = [rid for rid in ids[:200] if int(rid.split("-")[1]) % 50]
    assert first["labelled"] == len(labelled)
    assert 0.3 < first["live_metrics"]["accuracy"] < 0.7  # half the predictions say 0
    assert first["offline_metrics"] == {"accuracy": 0.9}
    assert second["live_metrics"] == {"mae": 0.5, "rmse": 0.5} and second["labelled"] == 100

    # idempotent: a re-run changes nothing; a late record re-aggregates its window
    before = list(MonitoringWindow.objects.values_list("id", "requests"))
    aggregation.aggregate()
    assert list(MonitoringWindow.objects.values_list("id", "requests")) == before
    send(ingest, normal, 1, prefix="late")
    aggregation.aggregate()
    assert MonitoringWindow.objects.get(start=normal).requests == 601
    assert MonitoringWindow.objects.count() == 2

    # bad query parameters are a 400, ingest tokens cannot read
    bad = reader_api.get(f"/api/v1/models/fraud/versions/{version}/monitoring/?since=yesterday")
    assert bad.status_code == 400 and "since" in bad.json()["error"]["message"]
    assert ingest.get(f"/api/v1/models/fraud/versions/{version}/monitoring/").status_code == 403


@pytest.mark.skipif(connection.vendor != "postgresql", reason="sampling is done in Postgres")
def test_a_busy_window_measures_drift_on_a_deterministic_sample(
    reader_api, ingest, version, settings
):
    settings.MODELGATE_DRIFT_SAMPLE = 200
    start = past_window(3)
    send(ingest, start, 1200, shift=1.5, error_every=100)
    aggregation.aggregate()
    window = MonitoringWindow.objects.get(start=start)
    assert (window.requests, window.errors) == (1200, 12)  # traffic: every record
    a = window.drift["a"]
    assert 120 < a["n"] < 300 and a["sampled"] == pytest.approx(200 / 1188, abs=0.001)
    assert sum(a["counts"]) == pytest.approx(1188, rel=0.15)  # scaled back to the window
    assert a["psi"] > 0.2 and a["drifted"] and window.drift["b"]["psi"] < 0.2
    assert sum(window.predictions["values"].values()) == pytest.approx(1188, rel=0.15)
    # the same records are sampled again: a re-run gives the same window
    before = (window.drift, window.predictions)
    aggregation.aggregate_window(window.version, "staging", start)
    again = MonitoringWindow.objects.get(start=start)
    assert (again.drift, again.predictions) == before


# --- monitors: permissions and validation ---------------------------------------------


RULE = {"model": "fraud", "environment": "staging", "metric": "error_rate", "op": ">",
        "value": 0.05, "window": W, "min_samples": 10}  # fmt: skip


def test_contributors_manage_monitors_readers_and_reviewers_only_read_them(
    alice_api, reader_api, bob, admin_api, ingest, model
):
    created = alice_api.post("/api/v1/monitors/", RULE, format="json")
    assert created.status_code == 201, created.content
    monitor = created.json()
    assert {k: monitor[k] for k in RULE} == RULE and monitor["created_by"] == "alice"
    url = f"/api/v1/monitors/{monitor['id']}/"
    assert reader_api.get("/api/v1/monitors/").json()[0]["id"] == monitor["id"]
    assert reader_api.get(url).json()["metric"] == "error_rate"
    for client in (reader_api, client_for(bob)):
        assert client.post("/api/v1/monitors/", RULE, format="json").status_code == 403
        assert client.patch(url, {"value": 1}, format="json").status_code == 403
        assert client.delete(url).status_code == 403
    # a read-only token of a contributor cannot write either; an ingest token not even read
    read_only = client_for(Monitor.objects.get().created_by, ["read"])
    assert read_only.patch(url, {"value": 1}, format="json").status_code == 403
    for path in ("/api/v1/monitors/", url, "/api/v1/alerts/"):
        assert ingest.get(path).status_code == 403
    assert ingest.post("/api/v1/monitors/", RULE, format="json").status_code == 403

    patched = alice_api.patch(url, {"value": 0.1, "enabled": False}, format="json")
    assert patched.status_code == 200 and patched.json()["value"] == 0.1
    assert not patched.json()["enabled"]
    assert admin_api.delete(url).status_code == 204
    assert alice_api.get(url).status_code == 404
    types = list(Event.objects.filter(type__startswith="monitor.").values_list("type", flat=True))
    assert sorted(types) == ["monitor.created", "monitor.deleted", "monitor.updated"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"metric": "cpu"}, "metric"),
        ({"metric": "live.nonsense"}, "metric"),
        ({"op": "=~"}, "op"),
        ({"op": "=="}, "op"),
        ({"value": "high"}, "value"),
        ({"value": None}, "value"),
        ({"window": 90}, "window"),
        ({"window": 0}, "window"),
        ({"min_samples": -1}, "min_samples"),
        ({"environment": "Prod!"}, "environment"),
        ({"model": "nope"}, "nope"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_monitor_gets_400_naming_the_field_and_stores_nothing(
    alice_api, model, change, named
):
    response = alice_api.post("/api/v1/monitors/", {**RULE, **change}, format="json")
    assert response.status_code == 400, response.content
    assert named in response.json()["error"]["message"]
    assert not Monitor.objects.exists() and not Event.objects.filter(type="monitor.created")


def test_a_bad_patch_gets_400_and_changes_nothing(alice_api, model):
    monitor = alice_api.post("/api/v1/monitors/", RULE, format="json").json()
    url = f"/api/v1/monitors/{monitor['id']}/"
    for change in ({"op": "~"}, {"model": "other"}, {"metric": "latency"}, []):
        assert alice_api.patch(url, change, format="json").status_code == 400
    assert alice_api.get(url).json() == monitor


# --- alerts ---------------------------------------------------------------------------


def test_an_alert_fires_once_while_the_condition_holds_and_resolves_once(
    alice_api, reader_api, ingest, version
):
    monitor = alice_api.post("/api/v1/monitors/", RULE, format="json").json()
    silent = alice_api.post(
        "/api/v1/monitors/", {**RULE, "metric": "requests", "op": "<", "value": 1}, format="json"
    ).json()
    drifting = alice_api.post(
        "/api/v1/monitors/", {**RULE, "metric": "drift.psi.max", "value": 0.2, "min_samples": 100},
        format="json",
    ).json()  # fmt: skip
    bad, good = past_window(6), past_window(5)
    send(ingest, bad, 200, error_every=10)  # 10% errors
    send(ingest, good, 200, prefix="g", shift=2.0, seed=3)  # no errors, drifted inputs
    aggregation.aggregate()

    def at(start):  # evaluated just after `start`'s window completed
        return start + timedelta(seconds=W + 1)

    assert alerts.evaluate_monitors(at(bad)) == {"fired": 1, "resolved": 0}
    assert alerts.evaluate_monitors(at(bad)) == {"fired": 0, "resolved": 0}  # fires once
    firing = reader_api.get("/api/v1/alerts/", {"state": "firing"}).json()["results"]
    assert [(a["monitor"], a["value"]) for a in firing] == [(monitor["id"], 0.1)]
    assert firing[0]["rule"] == "error_rate > 0.05" and firing[0]["detail"]["samples"] == 200

    # the next window: errors gone (resolved), inputs drifted (fired)
    assert alerts.evaluate_monitors(at(good)) == {"fired": 1, "resolved": 1}
    # then silence: requests < 1 over a window fires for a model that has served there
    assert alerts.evaluate_monitors(at(good) + timedelta(seconds=W)) == {
        "fired": 1,
        "resolved": 0,
    }
    states = {a.monitor_id: (a.state, a.value) for a in Alert.objects.all()}
    assert states[monitor["id"]] == ("resolved", 0.1)
    assert states[silent["id"]] == ("firing", 0.0)
    assert states[drifting["id"]][0] == "firing" and states[drifting["id"]][1] > 0.2
    fired = Event.objects.filter(type="monitor.alert.fired").order_by("id")
    resolved = Event.objects.filter(type="monitor.alert.resolved")
    assert [e.data["monitor"] for e in fired] == [monitor["id"], drifting["id"], silent["id"]]
    assert [e.data["monitor"] for e in resolved] == [monitor["id"]]
    assert fired[1].data["feature"] == "a" and fired[0].model_name == "fraud"

    listed = reader_api.get("/api/v1/alerts/", {"model": "fraud", "environment": "staging"})
    assert len(listed.json()["results"]) == 3
    assert reader_api.get("/api/v1/alerts/", {"environment": "production"}).json()["results"] == []
    assert reader_api.get("/api/v1/alerts/", {"state": "open"}).status_code == 400
