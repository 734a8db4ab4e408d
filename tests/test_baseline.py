"""Baselines and explanations: computed by the CLI on the user's machine, validated by the
server against their schemas, shown in the version detail; also read from files."""

import csv
import json
import os
import subprocess

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from registry.client import profiling
from registry.models import ModelVersion, RegisteredModel

from .conftest import ROOT, token_for, upload_version, wait_for

MODELGATE = ROOT / ".venv" / "bin" / "modelgate"


def numeric(count=10, missing=0, edges=(0.0, 1.0, 2.0), counts=(5, 5)) -> dict:
    return {
        "type": "numeric",
        "count": count,
        "missing": missing,
        "mean": 1.0,
        "std": 0.5,
        "min": edges[0],
        "max": edges[-1],
        "bins": {"edges": list(edges), "counts": list(counts)},
    }


BASELINE = {
    "format": "modelgate-baseline/1",
    "source": {"name": "train.csv", "rows": 10},
    "columns": ["amount", "country"],
    "features": {
        "amount": numeric(),
        "country": {
            "type": "categorical",
            "count": 10,
            "missing": 1,
            "top": [{"value": "fr", "count": 6}, {"value": "de", "count": 3}],
            "other": 0,
            "distinct": 2,
        },
    },
    "target_name": "label",
    "target": {"type": "categorical", "count": 10, "missing": 0, "top": []},
}
EXPLANATIONS = {
    "method": "permutation_importance",
    "features": {"amount": {"importance": 0.3, "std": 0.01}, "country": {"importance": 0.0}},
}


def declare(client, model="fraud", **metadata):
    body = {"files": [{"path": "model.pkl", "size": 1, "sha256": "0" * 64}], **metadata}
    return client.post(f"/api/v1/models/{model}/versions/", body, format="json")


def test_a_version_carries_its_baseline_and_explanations(alice_api, model):
    response = declare(alice_api, baseline=BASELINE, explanations=EXPLANATIONS)
    assert response.status_code == 201, response.content
    detail = alice_api.get("/api/v1/models/fraud/versions/1/").json()
    assert detail["baseline"] == BASELINE
    assert detail["explanations"] == EXPLANATIONS
    assert declare(alice_api).status_code == 201
    plain = alice_api.get("/api/v1/models/fraud/versions/2/").json()
    assert (plain["baseline"], plain["explanations"]) == (None, None)


def with_feature(**changes) -> dict:
    return {**BASELINE, "features": {**BASELINE["features"], "amount": numeric(**changes)}}


@pytest.mark.parametrize(
    "field, value, where",
    [
        ("baseline", [], "baseline"),
        ("baseline", {"columns": []}, "baseline"),
        ("baseline", {**BASELINE, "surprise": 1}, "baseline"),
        ("baseline", {**BASELINE, "features": {}}, "baseline.features"),
        ("baseline", with_feature(count=-1), "baseline.features.amount.count"),
        ("baseline", with_feature(counts=(5,)), "baseline.features.amount.bins"),
        ("baseline", with_feature(edges=(2.0, 1.0, 3.0)), "baseline.features.amount.bins.edges"),
        ("baseline", with_feature(counts=(50, 5)), "baseline.features.amount.bins.counts"),
        ("baseline", with_feature(missing=11), "baseline.features.amount.missing"),
        (
            "baseline",
            {**BASELINE, "features": {"amount": {"type": "numeric", "count": 1, "missing": 0}}},
            "baseline.features.amount",
        ),
        ("baseline", {**BASELINE, "columns": ["amount", "ghost"]}, "baseline.columns"),
        ("explanations", {"features": EXPLANATIONS["features"]}, "explanations"),
        (
            "explanations",
            {**EXPLANATIONS, "features": {"amount": {"importance": "high"}}},
            "explanations.features.amount.importance",
        ),
    ],
)
def test_a_bad_baseline_or_explanation_gets_400_naming_the_field(
    alice_api, model, field, value, where
):
    response = declare(alice_api, **{field: value})
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["details"]["field"] == where, error
    assert f"'{where}'" in error["message"]
    assert not ModelVersion.objects.exists()


def test_an_infinite_number_in_a_baseline_gets_400(alice_api, model):
    body = json.dumps(
        {"files": [{"path": "m.pkl", "size": 1, "sha256": "0" * 64}], "baseline": with_feature()}
    ).replace('"mean": 1.0', '"mean": 1e999')
    response = alice_api.post(
        "/api/v1/models/fraud/versions/", body, content_type="application/json"
    )
    assert response.status_code == 400
    # Refused as the body is read: no field of any request may hold an infinity.
    assert "1e999 is out of range" in response.json()["error"]["message"]
    assert not ModelVersion.objects.exists()


# --- the profile the CLI computes ------------------------------------------------------


def test_a_numeric_profile_has_quantile_bins_and_moments_and_a_categorical_one_top_k():
    values = [str(v) for v in range(100)] + ["", "NA"]
    profile = profiling.profile_values(values, profiling._numbers(values))
    assert (profile["type"], profile["count"], profile["missing"]) == ("numeric", 102, 2)
    assert (profile["min"], profile["max"], profile["mean"]) == (0.0, 99.0, 49.5)
    assert len(profile["bins"]["edges"]) == 11 and sum(profile["bins"]["counts"]) == 100
    assert all(9 <= c <= 11 for c in profile["bins"]["counts"])  # quantile bins: even

    cats = ["fr"] * 50 + ["de"] * 30 + [f"x{i}" for i in range(25)] + [""]
    profile = profiling.profile_values(cats, profiling._numbers(cats))
    assert profile["type"] == "categorical" and profile["missing"] == 1
    assert profile["top"][:2] == [{"value": "fr", "count": 50}, {"value": "de", "count": 30}]
    assert len(profile["top"]) == 20 and profile["other"] == 7 and profile["distinct"] == 27

    constant = ["3"] * 5
    profile = profiling.profile_values(constant, profiling._numbers(constant))
    assert profile["bins"] == {"edges": [3.0, 3.0], "counts": [5]}


# --- end to end: `modelgate push --baseline --explain` -----------------------------------


@pytest.fixture
def trained(tmp_path):
    """A model whose label depends on `signal` only, and its training data as CSV."""
    rng = np.random.default_rng(1)
    rows = 600
    signal, noise = rng.normal(size=rows), rng.normal(size=rows)
    country = rng.choice(["fr", "de", "it"], size=rows)
    label = (signal > 0).astype(int)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    joblib.dump(
        LogisticRegression().fit(np.column_stack([signal, noise]), label),
        model_dir / "model.joblib",
    )
    (model_dir / "requirements.txt").write_text("scikit-learn\n")
    data = tmp_path / "train.csv"
    with data.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["signal", "noise", "label"])
        writer.writerows(zip(signal, noise, label, strict=True))
    with_text = tmp_path / "with_text.csv"
    with with_text.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["signal", "country", "label"])
        writer.writerows(zip(signal, country, label, strict=True))
    return model_dir, data, with_text


def cli(server, token, *args, expect=0):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELGATE_")}
    env.update(MODELGATE_URL=server, MODELGATE_TOKEN=token, MODELGATE_CONFIG_DIR="/nonexistent")
    result = subprocess.run(
        [str(MODELGATE), "-q", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == expect, result.stderr + result.stdout
    return result


@pytest.mark.live
def test_push_with_baseline_and_explain_stores_both_in_the_version(
    transactional_db, live_server, alice, alice_api, trained
):
    model_dir, data, with_text = trained
    alice_api.post("/api/v1/models/", {"name": "churn"}, format="json")
    token = token_for(alice)
    out = cli(live_server.url, token, "push", model_dir, "-m", "churn", "--baseline", data,
              "--target", "label", "--explain")  # fmt: skip
    assert out.stdout.strip() == "churn/1"
    detail = alice_api.get("/api/v1/models/churn/versions/1/").json()
    baseline, explanations = detail["baseline"], detail["explanations"]
    assert baseline["columns"] == ["signal", "noise"]
    assert set(baseline["features"]) == {"signal", "noise"}
    assert baseline["source"]["rows"] == 600 and len(baseline["source"]["sha256"]) == 64
    signal = baseline["features"]["signal"]
    assert signal["type"] == "numeric" and sum(signal["bins"]["counts"]) == 600
    assert baseline["target_name"] == "label" and baseline["target"]["type"] == "numeric"
    assert baseline["prediction"]["type"] == "categorical"
    assert {item["value"] for item in baseline["prediction"]["top"]} == {"0", "1"}
    assert explanations["method"] == "permutation_importance"
    importance = explanations["features"]
    assert importance["signal"]["importance"] > 0.2 > abs(importance["noise"]["importance"])
    assert explanations["data"]["rows"] == 600 and explanations["target_name"] == "label"
    # The data itself never left the machine: only its summary did.
    assert "0.1234" not in json.dumps(detail) and data.name == baseline["source"]["name"]

    # Without --explain: a baseline with a categorical column, no explanations.
    assert cli(live_server.url, token, "push", model_dir, "-m", "churn", "--baseline",
               with_text).stdout.strip() == "churn/2"  # fmt: skip
    detail = alice_api.get("/api/v1/models/churn/versions/2/").json()
    assert detail["explanations"] is None
    assert detail["baseline"]["features"]["country"]["type"] == "categorical"
    assert "target" not in detail["baseline"]

    # Mistakes are caught before anything is uploaded.
    failed = cli(live_server.url, token, "push", model_dir, "-m", "churn", "--baseline", data,
                 "--target", "nope", expect=1)  # fmt: skip
    assert "no column 'nope'" in failed.stderr
    failed = cli(live_server.url, token, "push", model_dir, "-m", "churn", "--explain", expect=2)
    assert "--baseline" in failed.stderr
    assert RegisteredModel.objects.get(name="churn").last_version_number == 2


# --- the same, as files in the version -------------------------------------------------


def test_baseline_and_explanations_files_in_the_version_are_read_by_extract(
    celery_worker, alice_api, model
):
    files = {
        "model.pkl": b"not a real model",
        "modelgate-baseline.json": json.dumps(BASELINE).encode(),
        "modelgate-explanations.json": json.dumps(EXPLANATIONS).encode(),
    }
    number = upload_version(alice_api, model, files)
    version = wait_for(
        lambda: ModelVersion.objects.filter(number=number, state__in=["ready", "failed"]).first()
    )
    assert version.state == "ready", version.status_reason
    detail = alice_api.get(f"/api/v1/models/fraud/versions/{number}/").json()
    assert detail["baseline"] == BASELINE and detail["explanations"] == EXPLANATIONS

    # Metadata sent with the version wins over a file.
    sent = {**EXPLANATIONS, "method": "shap"}
    number = upload_version(alice_api, model, files, explanations=sent)
    wait_for(lambda: ModelVersion.objects.filter(number=number, state="ready").exists())
    assert alice_api.get(f"/api/v1/models/fraud/versions/{number}/").json()["explanations"] == sent


@pytest.mark.parametrize(
    "content, reason",
    [
        (json.dumps(with_feature(count=-1)), "'modelgate-baseline.json.features.amount.count'"),
        ("{not json", "modelgate-baseline.json is not valid JSON"),
    ],
)
def test_a_bad_baseline_file_fails_the_version_with_a_clear_reason(
    celery_worker, alice_api, model, content, reason
):
    files = {"model.pkl": b"x", "modelgate-baseline.json": content.encode()}
    number = upload_version(alice_api, model, files)
    version = wait_for(
        lambda: ModelVersion.objects.filter(number=number, state__in=["ready", "failed"]).first()
    )
    assert version.state == "failed"
    assert reason in version.status_reason
    assert version.pipeline["extract"] == "failed" and version.baseline is None
