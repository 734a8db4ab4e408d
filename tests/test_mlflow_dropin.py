"""Issue 20's drop-in journey: an MLflow script, unchanged, in a venv with only MLflow's client
and scikit-learn (tests/venvs.py), against a live Modelgate with a real worker.

It trains with autolog and registers in one line (`log_model(..., registered_model_name=)`);
a reviewer promotes the version in Modelgate; then `pyfunc.load_model("models:/Fraud
Detector@production")` predicts what the trained model did, with tracking on Modelgate and
again with tracking on a local `sqlite:` store and only the registry on Modelgate.
"""

import json
import subprocess
from urllib.parse import quote

import httpx
import pytest

from registry.models import Environment, ModelVersion

from . import venvs
from .api_flows import promote_and_wait
from .conftest import token_for

pytestmark = pytest.mark.live

NAME = "Fraud Detector"

TRAIN = """
import json, sys
import mlflow, numpy as np
from sklearn.linear_model import LogisticRegression

rng = np.random.default_rng(7)
X = rng.normal(size=(300, 4))
y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
mlflow.set_experiment("fraud")
mlflow.sklearn.autolog(log_models=False)
with mlflow.start_run() as run:
    model = LogisticRegression().fit(X, y)
    info = mlflow.sklearn.log_model(model, name="model", registered_model_name=sys.argv[2],
                                    input_example=X[:2])
json.dump({"run_id": run.info.run_id, "version": info.registered_model_version,
           "X": X[:25].tolist(), "predicted": model.predict(X[:25]).tolist()},
          open(sys.argv[1], "w"))
"""

LOAD = """
import json, sys
import mlflow, numpy as np

seen = json.load(open(sys.argv[1]))
model = mlflow.pyfunc.load_model(f"models:/{sys.argv[2]}@production")
print(json.dumps(np.asarray(model.predict(np.asarray(seen["X"]))).tolist()))
"""


@pytest.fixture(scope="module")
def mlflow_python():
    return venvs.mlflow_venv() / "bin" / "python"


def run_script(python, tmp_path, source: str, env: dict, *args: str) -> str:
    script = tmp_path / "script.py"
    script.write_text(source)
    done = subprocess.run(
        [str(python), str(script), *args],
        env={**venvs.pip_env(), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def test_an_mlflow_script_registers_and_a_promoted_version_loads_anywhere(
    live_server, celery_worker, alice, bob, settings, tmp_path, mlflow_python
):
    settings.MODELGATE_GIT_DIR = tmp_path / "git"
    Environment.objects.create(
        name="production",
        required_approvals=1,
        reviewer_group="reviewers",
        gates=[{"type": "scan_clean"}, {"type": "metric_not_worse", "metric": "training_score"}],
    )
    on_modelgate = {
        "MLFLOW_TRACKING_URI": live_server.url,
        "MLFLOW_TRACKING_USERNAME": "alice",
        "MLFLOW_TRACKING_PASSWORD": "alice-password-1",
    }
    seen_file = tmp_path / "seen.json"
    run_script(mlflow_python, tmp_path, TRAIN, on_modelgate, str(seen_file), NAME)
    seen = json.loads(seen_file.read_text())

    version = ModelVersion.objects.get(model__name=NAME, number=int(seen["version"]))
    assert version.lineage["run_id"] == seen["run_id"]
    assert "training_score" in version.metrics  # autolog's metric, fed by the run

    author = {"Authorization": f"Bearer {token_for(alice)}"}
    reviewer = {"Authorization": f"Bearer {token_for(bob)}"}
    with httpx.Client(timeout=60) as http:
        state = promote_and_wait(
            http, live_server.url, f"{quote(NAME)}/{seen['version']}", "production", author,
            reviewer,
        )  # fmt: skip
    assert state == "promoted"

    loaded = run_script(mlflow_python, tmp_path, LOAD, on_modelgate, str(seen_file), NAME)
    assert json.loads(loaded) == seen["predicted"]

    # Tracking on a local store, only the registry on Modelgate: the download URI carries
    # Modelgate's host, so the artifacts still come from it.
    elsewhere = {
        **on_modelgate,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'local-tracking.db'}",
        "MLFLOW_REGISTRY_URI": live_server.url,
    }
    loaded = run_script(mlflow_python, tmp_path, LOAD, elsewhere, str(seen_file), NAME)
    assert json.loads(loaded) == seen["predicted"]
