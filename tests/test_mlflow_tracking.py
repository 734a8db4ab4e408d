"""MLflow tracking against a live gunicorn: a real MLflow client in its own process trains
with autolog, logs and registers models, and loads them back; experiments and runs obey
their team's access; bad input gets MLflow's error codes."""

import json
import subprocess
import sys
import textwrap

import pytest
import requests

from registry.models import (
    Alias,
    ArtifactFile,
    Environment,
    Experiment,
    LoggedModel,
    ModelVersion,
    RegisteredModel,
    Run,
)
from registry.services import gates

from .conftest import _make_user, join_team, token_for
from .processes import Web, base_env

pytest.importorskip("mlflow")
pytest.importorskip("sklearn")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

API = "/api/2.0/mlflow"


@pytest.fixture
def web(tmp_path, settings, transactional_db):
    settings.MODELGATE_GIT_DIR = tmp_path / "git"
    server = Web(base_env(settings.CELERY_BROKER_URL), tmp_path, workers=1).start()
    yield server
    server.stop()


def run_client(web, tmp_path, script: str, **auth: str) -> dict:
    """`script` under the dev venv's python with MLFLOW_TRACKING_URI on `web`; its last
    stdout line is JSON."""
    env = {
        "PATH": str(tmp_path.parent) + ":/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MLFLOW_TRACKING_URI": web.url,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "PYTHONWARNINGS": "ignore",
        **auth,
    }
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-6000:] + "\n" + web.output()[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


TRAIN = """
import json, os, tempfile
import numpy as np
import mlflow, mlflow.pyfunc, mlflow.sklearn
from sklearn.linear_model import LogisticRegression

rng = np.random.RandomState(7)
X = rng.rand(300, 4)
y = (X[:, 0] + X[:, 1] > 1).astype(int)

mlflow.set_experiment("fraud")
mlflow.sklearn.autolog()
with mlflow.start_run() as run:
    model = LogisticRegression(C=0.5).fit(X, y)  # autolog: params, metrics, a logged model
    mlflow.log_metric("val_auc", 0.91)
    info = mlflow.sklearn.log_model(model, name="clf", registered_model_name="fraud-detector")
    # A model folder among the run's own artifacts, registered by its runs:/ path below.
    folder = os.path.join(tempfile.mkdtemp(), "exported")
    mlflow.sklearn.save_model(model, folder)
    mlflow.log_artifacts(folder, "exported")
run_id = run.info.run_id
autologged = mlflow.register_model(f"runs:/{run_id}/model", "fraud-detector")
exported = mlflow.register_model(f"runs:/{run_id}/exported", "fraud-detector")
mlflow.MlflowClient().set_registered_model_alias("fraud-detector", "champion", "1")
expected = model.predict(X).tolist()
loads = {
    uri: mlflow.pyfunc.load_model(uri).predict(X).tolist() == expected
    for uri in (
        "models:/fraud-detector/1",
        "models:/fraud-detector@champion",
        f"models:/fraud-detector/{exported.version}",
        f"runs:/{run_id}/exported",
        f"runs:/{run_id}/model",  # autolog's logged model, found by the run and its name
        info.model_uri,
    )
}
fetched = mlflow.get_run(run_id)
found = mlflow.search_runs(
    experiment_names=["fraud"], filter_string="metrics.val_auc > 0.9", output_format="list"
)
print(json.dumps({
    "run_id": run_id,
    "model_id": info.model_id,
    "versions": [info.registered_model_version, autologged.version, exported.version],
    "loads": loads,
    "params": fetched.data.params,
    "metrics": fetched.data.metrics,
    "found": [r.info.run_id for r in found],
    "classes": len(set(expected)),
}))
"""


def test_autolog_log_model_register_and_load(web, tmp_path, celery_worker, alice):
    out = run_client(web, tmp_path, TRAIN, MLFLOW_TRACKING_TOKEN=token_for(alice))
    assert out["classes"] == 2  # the comparison of predictions means something
    assert out["loads"] == dict.fromkeys(out["loads"], True), out["loads"]
    assert out["versions"] == ["1", "2", "3"]
    assert out["params"]["C"] == "0.5"
    assert out["metrics"]["val_auc"] == 0.91
    assert "training_accuracy_score" in out["metrics"]
    assert out["found"] == [out["run_id"]]

    run = Run.objects.get(pk=out["run_id"])
    experiment = Experiment.objects.get(name="fraud")
    assert run.experiment == experiment and experiment.team.name == "default"
    assert run.created_by == alice and run.status == "FINISHED"
    assert run.datasets.exists()  # autolog's training set, described not stored

    versions = {v.number: v for v in ModelVersion.objects.filter(model__name="fraud-detector")}
    assert {v.state for v in versions.values()} == {"ready"}
    first, autologged, exported = versions[1], versions[2], versions[3]
    # log_model(registered_model_name=) registered the logged model, models:/m-<id>.
    assert first.lineage["source"] == f"models:/{out['model_id']}"
    assert first.lineage["logged_model_id"] == out["model_id"]
    assert autologged.lineage["logged_model_id"] != out["model_id"]  # autolog's own "model"
    assert exported.lineage["source"].endswith(f"/{out['run_id']}/artifacts/exported")
    for version in versions.values():
        # A run feeds its version: metrics, params, and the run in its lineage.
        assert version.lineage["run_id"] == out["run_id"]
        assert version.lineage["experiment_id"] == str(experiment.pk)
        assert version.metrics["val_auc"] == 0.91
        assert version.params["C"] == "0.5"
        # The version's files are the run's (logged model's) blobs, linked, not copied.
        staged = dict(ArtifactFile.objects.values_list("path", "sha256"))
        for file in version.files.all():
            assert file.sha256 in staged.values()
            assert file.uploaded_by == alice
    assert "MLmodel" in set(first.files.values_list("path", flat=True))
    exported_files = set(exported.files.values_list("path", flat=True))
    assert "MLmodel" in exported_files and len(exported_files) >= 3, exported_files

    # The worker scanned and packaged it like any upload.
    assert first.scan_status == "clean", first.scan_findings
    logged = LoggedModel.objects.filter(source_run=run)
    assert sorted(logged.values_list("name", "status")) == [
        ("clf", "LOGGED_MODEL_READY"),
        ("model", "LOGGED_MODEL_READY"),
    ]

    # metric_not_worse reads the run-fed metric: a live version that did better blocks it.
    production = Environment.objects.create(
        name="production", gates=[{"type": "metric_not_worse", "metric": "val_auc"}]
    )
    Alias.objects.create(model=exported.model, name="production", version=exported)

    def not_worse(version):
        results = gates.evaluate(ModelVersion.objects.get(pk=version.pk), production)
        return next(r for r in results if r["type"] == "metric_not_worse")

    assert not_worse(first)["passed"] is True  # 0.91, as the live one
    ModelVersion.objects.filter(pk=exported.pk).update(metrics={"val_auc": 0.95})
    result = not_worse(first)
    assert result["passed"] is False and "val_auc = 0.91" in result["detail"], result


def test_another_teams_experiment_and_run_do_not_exist_for_you(web, tmp_path, alice):
    ben = _make_user("ben", ["contributors"], team="other")
    join_team(alice, "contributor", "risk")  # alice writes in two teams: she must say which
    alice_token, ben_token = token_for(alice), token_for(ben)

    def call(token, method, path, body=None):
        response = requests.request(
            method,
            f"{web.url}{API}/{path}",
            headers={"Authorization": f"Bearer {token}"},
            json=body if method != "GET" else None,
            params=body if method == "GET" else None,
            timeout=30,
        )
        return response.status_code, response.json()

    status, body = call(alice_token, "POST", "experiments/create", {"name": "secret"})
    assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    assert "modelgate.team" in body["message"]
    tags = [{"key": "modelgate.team", "value": "risk"}]
    status, body = call(alice_token, "POST", "experiments/create", {"name": "secret", "tags": tags})
    assert status == 200, body
    experiment_id = body["experiment_id"]
    status, body = call(alice_token, "POST", "runs/create", {"experiment_id": experiment_id})
    assert status == 200, body
    run_id = body["run"]["info"]["run_id"]
    assert body["run"]["info"]["artifact_uri"] == (
        f"mlflow-artifacts:/experiments/{experiment_id}/{run_id}/artifacts"
    )

    # ben, in another team: the same answer as for what does not exist.
    missing_run = "0" * 32
    for path, params in (
        ("experiments/get", {"experiment_id": experiment_id}),
        ("experiments/get-by-name", {"experiment_name": "secret"}),
        ("runs/get", {"run_id": run_id}),
    ):
        status, body = call(ben_token, "GET", path, params)
        assert (status, body["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST"), (path, body)
    hidden = call(ben_token, "GET", "runs/get", {"run_id": run_id})[1]["message"]
    missing = call(ben_token, "GET", "runs/get", {"run_id": missing_run})[1]["message"]
    assert hidden.replace(run_id, "X") == missing.replace(missing_run, "X")
    status, body = call(ben_token, "POST", "runs/log-batch", {"run_id": run_id, "metrics": []})
    assert status == 404, body
    status, body = call(ben_token, "POST", "runs/search", {"experiment_ids": [experiment_id]})
    assert status == 404, body
    status, body = call(ben_token, "POST", "experiments/search", {})
    assert "secret" not in [e["name"] for e in body["experiments"]]
    artifact = f"experiments/{experiment_id}/{run_id}/artifacts/model.pkl"
    put = requests.put(
        f"{web.url}/api/2.0/mlflow-artifacts/artifacts/{artifact}",
        data=b"not his",
        headers={"Authorization": f"Bearer {ben_token}"},
        timeout=30,
    )
    assert put.status_code == 404, put.text
    assert not ArtifactFile.objects.exists()

    # Nor may he make a version of his own model from her run's files.
    assert call(ben_token, "POST", "registered-models/create", {"name": "copycat"})[0] == 200
    status, body = call(
        ben_token, "POST", "model-versions/create", {"name": "copycat", "source": f"runs:/{run_id}"}
    )
    assert (status, body["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST"), body
    assert not ModelVersion.objects.exists()

    # Basic auth, as MLFLOW_TRACKING_USERNAME/PASSWORD send it, is the same caller.
    basic = requests.get(
        f"{web.url}{API}/runs/get",
        params={"run_id": run_id},
        auth=("alice", "alice-password-1"),
        timeout=30,
    )
    assert basic.status_code == 200 and basic.json()["run"]["info"]["user_id"] == "alice"

    # A read-only token reads and searches, and cannot create runs.
    read_only = token_for(alice, ["read"])
    assert call(read_only, "GET", "runs/get", {"run_id": run_id})[0] == 200
    status, body = call(read_only, "POST", "runs/search", {"experiment_ids": [experiment_id]})
    assert status == 200 and [r["info"]["run_id"] for r in body["runs"]] == [run_id]
    status, body = call(read_only, "POST", "runs/create", {"experiment_id": experiment_id})
    assert (status, body["error_code"]) == (403, "PERMISSION_DENIED")
    assert Run.objects.count() == 1

    # The run's files: its creator writes them, a teammate may not slip one in, a viewer
    # of the team reads them.
    def put(token, data):
        return requests.put(
            f"{web.url}/api/2.0/mlflow-artifacts/artifacts/{artifact}",
            data=data,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    teammate = _make_user("tom", ["contributors"], team="risk")
    denied = put(token_for(teammate), b"cos\nsystem\n")
    assert (denied.status_code, denied.json()["error_code"]) == (403, "PERMISSION_DENIED")
    assert put(alice_token, b"weights").status_code == 200
    viewer = _make_user("vera", team="risk")
    got = requests.get(
        f"{web.url}/api/2.0/mlflow-artifacts/artifacts/{artifact}",
        headers={"Authorization": f"Bearer {token_for(viewer)}"},
        timeout=30,
    )
    assert (got.status_code, got.content) == (200, b"weights")
    hidden = requests.get(
        f"{web.url}/api/2.0/mlflow-artifacts/artifacts/{artifact}",
        headers={"Authorization": f"Bearer {ben_token}"},
        timeout=30,
    )
    assert hidden.status_code == 404
    assert list(ArtifactFile.objects.values_list("created_by__username", flat=True)) == ["alice"]

    # A viewer of the team reads the run, may not write to it.
    assert call(token_for(viewer), "GET", "runs/get", {"run_id": run_id})[0] == 200
    status, body = call(
        token_for(viewer), "POST", "runs/set-tag", {"run_id": run_id, "key": "k", "value": "v"}
    )
    assert (status, body["error_code"]) == (403, "PERMISSION_DENIED"), body


def test_bad_input_gets_mlflow_error_codes(web, alice):
    token = token_for(alice)

    def post(path, body):
        response = requests.post(
            f"{web.url}{API}/{path}",
            headers={"Authorization": f"Bearer {token}"},
            json=body,
            timeout=30,
        )
        return response.status_code, response.json()

    status, body = post("runs/create", {"experiment_id": "424242"})
    assert (status, body["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
    status, body = post("runs/create", {"experiment_id": "0"})  # MLflow's Default exists
    assert status == 200, body
    run_id = body["run"]["info"]["run_id"]

    def batch(**fields):
        return post("runs/log-batch", {"run_id": run_id, **fields})

    for value in ("abc", "NaN", "Infinity", True, None, {"x": 1}):
        metric = {"key": "loss", "value": value, "timestamp": 1, "step": 0}
        status, body = batch(metrics=[metric])
        assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), (value, body)
    huge = [{"key": f"m{i}", "value": 1.0, "timestamp": 1, "step": 0} for i in range(1001)]
    status, body = batch(metrics=huge)
    assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    assert "at most 1000" in body["message"]
    status, body = batch(params=[{"key": "../x", "value": "1"}])
    assert status == 400, body
    status, body = batch(params=[{"key": "lr", "value": "x" * 6001}])
    assert status == 400, body
    # One bad entry and nothing of the batch is kept.
    good = {"key": "ok", "value": 1.0, "timestamp": 1, "step": 0}
    status, body = batch(metrics=[good, {"key": "bad", "value": "x"}], params=[{"key": "p"}])
    assert status == 400
    assert not Run.objects.get(pk=run_id).metric_values.exists()
    # A param keeps its value.
    assert batch(params=[{"key": "lr", "value": "0.1"}])[0] == 200
    status, body = batch(params=[{"key": "lr", "value": "0.2"}])
    assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    assert Run.objects.get(pk=run_id).params == {"lr": "0.1"}

    status, body = post(
        "runs/search", {"experiment_ids": ["0"], "filter": "metrics.loss > 1 OR params.x = 'y'"}
    )
    assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), body
    assert "Unsupported filter clause" in body["message"]
    status, body = post("runs/search", {"experiment_ids": ["0"], "filter": "datasets.name = 'x'"})
    assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), body
    status, body = post("runs/update", {"run_id": run_id, "status": "EXPLODED"})
    assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), body
    status, body = post("experiments/create", {"name": "x", "artifact_location": "s3://b/x"})
    assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), body
    assert post("experiments/create", {"name": "dup"})[0] == 200
    status, body = post("experiments/create", {"name": "dup"})
    assert (status, body["error_code"]) == (400, "RESOURCE_ALREADY_EXISTS")
    status, body = post("runs/create", {"experiment_id": "../1"})
    assert (status, body["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")

    # A version from a run that does not exist, or an id that is not one: refused, and the
    # model MLflow's register step made for it a moment ago is taken back.
    for source, code in (
        (f"runs:/{'f' * 32}/model", "RESOURCE_DOES_NOT_EXIST"),
        ("runs:/abc/model", "INVALID_PARAMETER_VALUE"),
        (f"runs:/{run_id}/nothing", "INVALID_PARAMETER_VALUE"),
        ("models:/m-" + "0" * 32, "RESOURCE_DOES_NOT_EXIST"),
    ):
        assert post("registered-models/create", {"name": "guarded"})[0] == 200
        status, body = post("model-versions/create", {"name": "guarded", "source": source})
        assert body["error_code"] == code, (source, body)
        assert not RegisteredModel.objects.filter(name="guarded").exists(), source
    # One made on purpose (it has a description) stays.
    post("registered-models/create", {"name": "kept", "description": "mine"})
    status, body = post("model-versions/create", {"name": "kept", "source": "runs:/abc/m"})
    assert status == 400 and RegisteredModel.objects.filter(name="kept").exists()
    assert not ModelVersion.objects.exists()


def test_a_team_that_owns_experiments_is_not_deleted(admin_user, alice):
    from registry.errors import Conflict
    from registry.services import teams, tracking

    team = join_team(alice, "contributor", "risk")
    tracking.create_experiment(alice, "churn", {"modelgate.team": "risk"})
    with pytest.raises(Conflict, match="MLflow experiments"):
        teams.delete_team(admin_user, team)
    assert Experiment.objects.get(name="churn").team == team


def test_run_filters_parse_as_mlflow_writes_them():
    from registry.mlflow.errors import MlflowError
    from registry.mlflow.tracking import parse_run_filter

    assert parse_run_filter(
        "metrics.`val auc` >= 0.9 and params.C = '0.5' AND tags.\"team x\" LIKE 'r%' "
        "AND attributes.status IN ('FINISHED', 'RUNNING') AND run_name != 'x AND y'"
    ) == [
        ("metrics", "val auc", ">=", 0.9),
        ("params", "C", "=", "0.5"),
        ("tags", "team x", "LIKE", "r%"),
        ("attributes", "status", "IN", ["FINISHED", "RUNNING"]),
        ("attributes", "run_name", "!=", "x AND y"),
    ]
    for bad in (
        "metrics.auc > 'high'",  # a metric compares with a number
        "params.C > 1",  # a param with a string
        "metrics.auc LIKE '0.9%'",
        "attributes.colour = 'red'",
        "params.C = '1' OR params.C = '2'",
        "params.C = 'unclosed",
    ):
        with pytest.raises(MlflowError) as info:
            parse_run_filter(bad)
        assert info.value.error_code == "INVALID_PARAMETER_VALUE", bad
