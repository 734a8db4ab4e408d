"""Download URIs that resolve wherever MLflow's tracking URI points: the model version's
`get-download-uri` names this server (MODELGATE_PUBLIC_URL, else the request's host), so
`mlflow.pyfunc.load_model("models:/<name>@<alias>")` works with the registry on Modelgate
and tracking on a local `sqlite:` store as well as on Modelgate itself."""

import json
import subprocess
import sys

import numpy as np
import pytest
import requests

from .conftest import client_for, token_for
from .processes import Web, base_env
from .test_mlflow import _clear_auth, as_token, ready_version
from .test_mlflow_artifacts import model_dir  # noqa: F401 - a fixture

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("sklearn")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"

LOAD = """
import json, sys, numpy, mlflow, mlflow.pyfunc
name, features = sys.argv[1], numpy.load(sys.argv[2])
version = mlflow.MlflowClient().get_model_version_by_alias(name, "champion").version
uri = mlflow.MlflowClient().get_model_version_download_uri(name, version)
model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
print(json.dumps({"uri": uri, "predictions": model.predict(features).tolist()}))
"""


def load_elsewhere(tmp_path, env: dict[str, str], name: str) -> dict:
    """`models:/<name>@champion` loaded by MLflow in a process of its own."""
    np.save(tmp_path / "features.npy", np.random.RandomState(3).rand(50, 4))
    done = subprocess.run(
        [sys.executable, "-c", LOAD, name, str(tmp_path / "features.npy")],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def web(tmp_path, settings, transactional_db):
    """gunicorn on the test database; the in-process `celery_worker` runs its jobs."""
    env = base_env(settings.CELERY_BROKER_URL, MODELGATE_MLFLOW_CREATE_WAIT_SECONDS="60")
    server = Web(env, tmp_path, workers=1).start()
    yield server
    server.stop()


def test_a_registered_model_loads_with_tracking_on_a_local_sqlite_store_or_on_modelgate(
    web,
    celery_worker,
    monkeypatch,
    tmp_path,
    alice,
    reader,
    model_dir,  # noqa: F811
):
    path, estimator, _ = model_dir
    client = as_token(monkeypatch, web, alice)
    client.create_registered_model("scorer")
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        with file.open("rb") as body:  # as MLflow's artifact repository uploads: a PUT each
            requests.put(
                f"{web.url}{ARTIFACTS}/runs/r1/model/{file.relative_to(path).as_posix()}",
                data=body,
                headers={"Authorization": f"Bearer {token_for(alice)}"},
                timeout=60,
            ).raise_for_status()
    version = client.create_model_version("scorer", "mlflow-artifacts:/runs/r1/model")
    assert version.status == "READY", version.status_message
    client.set_registered_model_alias("scorer", "champion", version.version)
    expected_uri = f"{web.url}{ARTIFACTS}/modelgate/scorer/{version.version}"

    _clear_auth(monkeypatch)
    features = np.random.RandomState(3).rand(50, 4)
    expected = estimator.predict(features).tolist()
    assert len(set(expected)) == 2  # both classes: the comparison means something
    reading = token_for(reader, ["read"])

    # Tracking on a local SQLite store: a host-less mlflow-artifacts:/ URI fails there.
    local = load_elsewhere(
        tmp_path,
        {
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns.db'}",
            "MLFLOW_REGISTRY_URI": web.url,
            "MLFLOW_TRACKING_TOKEN": reading,
        },
        "scorer",
    )
    assert local["predictions"] == expected
    assert local["uri"] == expected_uri

    # Tracking on Modelgate too, with Basic auth this time.
    remote = load_elsewhere(
        tmp_path,
        {
            "MLFLOW_TRACKING_URI": web.url,
            "MLFLOW_TRACKING_USERNAME": "reader",
            "MLFLOW_TRACKING_PASSWORD": "reader-password-1",
        },
        "scorer",
    )
    assert remote["predictions"] == expected

    # The URI needs the registry's credentials like any other read.
    assert requests.get(f"{expected_uri}/MLmodel", timeout=30).status_code == 401
    authorized = {"Authorization": f"Bearer {reading}"}
    assert requests.get(f"{expected_uri}/MLmodel", headers=authorized, timeout=30).ok


def test_the_download_uri_names_the_public_url_or_the_host_asked(
    live_server, monkeypatch, settings, alice
):
    client = as_token(monkeypatch, live_server, alice)
    client.create_registered_model("named")
    number = ready_version(client_for(alice), "named")
    assert client.get_model_version_download_uri("named", number) == (
        f"{live_server.url}{ARTIFACTS}/modelgate/named/{number}"
    )
    # A version without an MLflow source shows the same URI as its source.
    assert client.get_model_version("named", number).source == (
        f"{live_server.url}{ARTIFACTS}/modelgate/named/{number}"
    )

    localhost = live_server.url.replace("127.0.0.1", "localhost")
    other = mlflow.MlflowClient(tracking_uri=localhost, registry_uri=localhost)
    assert other.get_model_version_download_uri("named", number).startswith(
        f"{localhost}{ARTIFACTS}/"
    )

    settings.MODELGATE_PUBLIC_URL = "https://models.example.com/registry"
    assert client.get_model_version_download_uri("named", number) == (
        f"https://models.example.com/registry{ARTIFACTS}/modelgate/named/{number}"
    )
