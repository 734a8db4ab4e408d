"""MLflow's artifact proxy and `models:/` URIs against a live Modelgate with a real worker:
versions created from uploaded artifacts, `source` refusals, stage transitions, and an
`mlflow.sklearn` model loaded by `mlflow.pyfunc` in another process."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import requests

from registry.models import ArtifactFile, Environment, Event, ModelVersion, Promotion
from registry.storage import get_store

from .conftest import ROOT, join_team, token_for, wait_for
from .test_mlflow import _clear_auth, as_token, error_code

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("sklearn")
from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository  # noqa: E402

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def native(live_server, user) -> httpx.Client:
    return httpx.Client(
        base_url=f"{live_server.url}/api/v1",
        headers={"Authorization": f"Bearer {token_for(user)}"},
        timeout=30,
    )


def put_artifact(live_server, user, path: str, data: bytes) -> None:
    """An upload as MLflow's artifact repository sends it: one PUT per file."""
    requests.put(
        f"{live_server.url}/api/2.0/mlflow-artifacts/artifacts/{path}",
        data=data,
        headers={"Authorization": f"Bearer {token_for(user)}"},
        timeout=30,
    ).raise_for_status()


@pytest.fixture
def model_dir(tmp_path) -> tuple[Path, object, np.ndarray]:
    """A scikit-learn model saved as an MLmodel folder, with the data to predict on."""
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    rng = np.random.RandomState(7)
    features = rng.rand(200, 4)
    labels = (features[:, 0] + features[:, 1] > 1).astype(int)
    estimator = LogisticRegression().fit(features, labels)
    path = tmp_path / "model"
    mlflow.sklearn.save_model(estimator, str(path))
    return path, estimator, features


def test_artifacts_upload_list_download_and_become_a_version(
    live_server, celery_worker, monkeypatch, alice, reader, model_dir, tmp_path
):
    """Must-show 3: a version created through MlflowClient is a version like any other."""
    path, _, _ = model_dir
    client = as_token(monkeypatch, live_server, alice)
    client.create_registered_model("iris")
    repo = MlflowArtifactsRepository("mlflow-artifacts:/staging-area/run-1/model")
    repo.log_artifacts(str(path))
    repo.log_artifact(str(path / "MLmodel"), "extra")  # a sub-folder

    listed = {f.path: (f.is_dir, f.file_size) for f in repo.list_artifacts()}
    assert listed["MLmodel"] == (False, (path / "MLmodel").stat().st_size)
    assert listed["extra"] == (True, None)
    assert [f.path for f in repo.list_artifacts("extra")] == ["extra/MLmodel"]
    assert repo.list_artifacts("MLmodel") == []  # a file, not a folder

    # Write-once: the same bytes again are fine, other bytes under the name are refused.
    repo.log_artifact(str(path / "MLmodel"))
    other = tmp_path / "MLmodel"
    other.write_text("other bytes")
    with pytest.raises(Exception, match="already exists"):
        repo.log_artifact(str(other))
    with pytest.raises(Exception, match="read-only"):
        MlflowArtifactsRepository("mlflow-artifacts:/modelgate/iris/1").log_artifact(str(other))

    version = client.create_model_version(
        "iris",
        "mlflow-artifacts:/staging-area/run-1/model",
        run_id="run-1",
        tags={"source": "mlflow"},
        description="from MLflow",
        await_creation_for=120,  # the client polls until the worker is done
    )
    version = client.get_model_version("iris", version.version)
    assert version.status == "READY"
    assert version.source == "mlflow-artifacts:/staging-area/run-1/model"
    assert version.run_id == "run-1"

    # The native API shows the same files, scanned and packaged like any upload.
    api = native(live_server, alice)
    detail = api.get(f"/models/iris/versions/{version.version}/").json()
    expected = {**tree(path), "extra/MLmodel": sha256_file(path / "MLmodel")}
    assert {f["path"]: f["sha256"] for f in detail["files"]} == expected
    assert detail["state"] == "ready"
    assert detail["scan"]["status"] == "clean", detail["scan"]
    assert detail["package"]["state"] == "ready"
    assert detail["lineage"]["run_id"] == "run-1"
    stored = ModelVersion.objects.get(model__name="iris", number=int(version.version))
    assert stored.pipeline == {s: "done" for s in ("verify", "scan", "extract", "package")}

    # ... and the UI.
    from django.test import Client

    browser = Client()
    browser.force_login(alice)
    page = browser.get(f"/models/iris/versions/{version.version}/").content.decode()
    assert all(digest in page for digest in expected.values())

    # The version's files are artifacts too: download them the way MLflow does.
    out = tmp_path / "downloaded"
    out.mkdir()
    mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/iris/{version.version}", dst_path=str(out)
    )
    assert {k: v for k, v in tree(out).items() if k != "registered_model_meta"} == expected

    # Each file of the version records who uploaded it.
    assert set(stored.files.values_list("uploaded_by__username", flat=True)) == {"alice"}

    # A reader sees the released version's files, not what others staged, and may not upload.
    as_token(monkeypatch, live_server, reader)
    assert (
        MlflowArtifactsRepository("mlflow-artifacts:/staging-area/run-1/model").list_artifacts()
        == []
    )
    assert MlflowArtifactsRepository(
        f"mlflow-artifacts:/modelgate/iris/{version.version}"
    ).list_artifacts()
    with pytest.raises(Exception, match="write"):
        MlflowArtifactsRepository("mlflow-artifacts:/reader").log_artifact(str(other))
    assert not ArtifactFile.objects.filter(path__startswith="reader").exists()


@pytest.mark.parametrize(
    "source",
    [
        "file:///etc/passwd",
        "/etc",
        "../../x",
        "mlflow-artifacts:/x/../../y",
        "http://127.0.0.1:1/#/../",
        "s3://bucket/x?x=../..",
        "mlflow-artifacts://evil.example/x",
        "mlflow-artifacts:/%2e%2e/etc",
        "runs:/abc/model",
        "models:/other@production",
        "",
    ],
)
def test_sources_outside_the_store_are_refused(live_server, monkeypatch, alice, source):
    client = as_token(monkeypatch, live_server, alice)
    client.create_registered_model("guarded")
    with pytest.raises(mlflow.exceptions.MlflowException) as info:
        client.create_model_version("guarded", source, await_creation_for=0)
    assert info.value.error_code == "INVALID_PARAMETER_VALUE", info.value.message
    assert not ModelVersion.objects.exists()


def test_a_server_file_named_as_source_is_never_read(live_server, monkeypatch, alice, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not for the registry " * 100)
    client = as_token(monkeypatch, live_server, alice)
    client.create_registered_model("guarded")
    for source in (f"file://{secret}", str(secret), f"mlflow-artifacts:{secret}"):
        with pytest.raises(mlflow.exceptions.MlflowException) as info:
            client.create_model_version("guarded", source, await_creation_for=0)
        assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert not get_store().exists(sha256_file(secret))
    assert not ModelVersion.objects.exists()


def test_a_version_can_be_registered_again_from_an_existing_one(live_server, monkeypatch, alice):
    client = as_token(monkeypatch, live_server, alice)
    client.create_registered_model("a")
    client.create_registered_model("b")
    for name, data in {"w.bin": b"weights", "cfg/c.json": b"{}"}.items():
        put_artifact(live_server, alice, f"runs/7/{name}", data)
    first = client.create_model_version("a", "mlflow-artifacts:/runs/7", await_creation_for=0)
    copy = client.create_model_version("b", f"models:/a/{first.version}", await_creation_for=0)
    single = client.create_model_version(
        "b", "mlflow-artifacts:/runs/7/w.bin", await_creation_for=0
    )
    files = lambda name, n: dict(  # noqa: E731
        ModelVersion.objects.get(model__name=name, number=int(n)).files.values_list(
            "path", "sha256"
        )
    )
    assert files("b", copy.version) == files("a", first.version)
    assert set(files("a", first.version)) == {"w.bin", "cfg/c.json"}
    assert files("b", single.version) == {"w.bin": hashlib.sha256(b"weights").hexdigest()}
    assert error_code(
        client.create_model_version, "b", "mlflow-artifacts:/runs/nothing", await_creation_for=0
    ) == ("INVALID_PARAMETER_VALUE")


def test_stage_transitions_request_reviewed_promotions(
    live_server, celery_worker, monkeypatch, alice, bob
):
    Environment.objects.create(name="staging", required_approvals=1, reviewer_group="reviewers")
    client = as_token(monkeypatch, live_server, alice)
    client.create_registered_model("churn")
    put_artifact(live_server, alice, "churn-run/m.bin", b"model bytes")
    version = client.create_model_version("churn", "mlflow-artifacts:/churn-run")
    assert client.get_model_version("churn", version.version).status == "READY"

    moved = client.transition_model_version_stage("churn", version.version, "Staging")
    assert moved.current_stage == "None"  # not moved: a promotion waits for review
    promotion = Promotion.objects.get(model__name="churn")
    assert (promotion.environment.name, promotion.state) == ("staging", "pending")
    assert promotion.requested_by == alice

    api = native(live_server, bob)
    decided = api.post(
        f"/promotions/{promotion.pk}/reviews/", json={"decision": "approve", "comment": "ok"}
    )
    assert decided.status_code == 201, decided.text
    wait_for(lambda: Promotion.objects.get(pk=promotion.pk).state == "promoted")
    assert client.get_model_version("churn", version.version).current_stage == "Staging"
    assert client.get_model_version_by_alias("churn", "staging").version == version.version

    assert error_code(client.transition_model_version_stage, "churn", version.version, "Moon") == (
        "INVALID_PARAMETER_VALUE"
    )
    assert error_code(client.transition_model_version_stage, "churn", version.version, "None") == (
        "INVALID_PARAMETER_VALUE"
    )
    # Archiving a live version is refused; MLflow's delete archives (nothing is lost).
    assert error_code(client.delete_model_version, "churn", version.version) == (
        "INVALID_PARAMETER_VALUE"
    )


def test_rename_and_delete_version(live_server, monkeypatch, alice):
    client = as_token(monkeypatch, live_server, alice)
    client.create_registered_model("old-name", description="kept")
    client.create_registered_model("taken")
    put_artifact(live_server, alice, "r/m.bin", b"bytes")
    version = client.create_model_version("old-name", "mlflow-artifacts:/r", await_creation_for=0)

    client.rename_registered_model("old-name", "new-name")  # MlflowClient returns None
    renamed = client.get_registered_model("new-name")
    assert (renamed.name, renamed.description) == ("new-name", "kept")
    assert client.get_model_version("new-name", version.version).version == version.version
    assert error_code(client.get_registered_model, "old-name") == "RESOURCE_DOES_NOT_EXIST"
    assert error_code(client.rename_registered_model, "new-name", "taken") == (
        "RESOURCE_ALREADY_EXISTS"
    )
    assert error_code(client.rename_registered_model, "new-name", "bad:name") == (
        "INVALID_PARAMETER_VALUE"
    )
    renamed_event = Event.objects.get(type="model.renamed")
    assert (renamed_event.model_name, renamed_event.data) == ("new-name", {"from": "old-name"})

    ModelVersion.objects.filter(pk=version_pk(version)).update(state="ready")
    client.delete_model_version("new-name", version.version)
    archived = client.get_model_version("new-name", version.version)
    assert archived.current_stage == "Archived"
    assert ModelVersion.objects.get(pk=version_pk(version)).state == "archived"
    assert ModelVersion.objects.get(pk=version_pk(version)).files.count() == 1


def version_pk(version) -> int:
    return ModelVersion.objects.get(model__name__in=[version.name, "new-name"]).pk


def test_a_pushed_mlflow_model_is_loaded_by_pyfunc_from_production(
    live_server, celery_worker, monkeypatch, alice, bob, model_dir, tmp_path
):
    """Must-show 2: save_model → `modelgate push` → reviewed promotion → pyfunc in a new process."""
    path, estimator, features = model_dir
    Environment.objects.create(name="production", required_approvals=1, reviewer_group="reviewers")
    alice_token = token_for(alice)
    env = {
        "PATH": str(ROOT / ".venv" / "bin"),
        "HOME": str(tmp_path),
        "MODELGATE_URL": live_server.url,
        "MODELGATE_TOKEN": alice_token,
        "MODELGATE_CONFIG_DIR": str(tmp_path / "config"),
    }
    modelgate = str(ROOT / ".venv" / "bin" / "modelgate")
    for args in (["models", "create", "scorer"], ["push", str(path), "-m", "scorer", "--wait"]):
        done = subprocess.run(
            [modelgate, "-q", *args], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout + done.stderr
    version = ModelVersion.objects.get(model__name="scorer")
    assert version.state == "ready", version.status_reason

    api = native(live_server, alice)
    requested = api.post(
        f"/models/scorer/versions/{version.number}/promotions/",
        json={"environment": "production", "comment": "ship it"},
    )
    assert requested.status_code == 201, requested.text
    promotion_id = requested.json()["id"]
    approved = native(live_server, bob).post(
        f"/promotions/{promotion_id}/reviews/", json={"decision": "approve", "comment": "ok"}
    )
    assert approved.status_code == 201, approved.text
    wait_for(lambda: Promotion.objects.get(pk=promotion_id).state == "promoted")

    np.save(tmp_path / "features.npy", features)
    script = (
        "import json, sys, numpy, mlflow.pyfunc\n"
        "model = mlflow.pyfunc.load_model('models:/scorer@production')\n"
        "print(json.dumps(model.predict(numpy.load(sys.argv[1])).tolist()))\n"
    )
    _clear_auth(monkeypatch)
    loaded = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "features.npy")],
        env={
            "PATH": env["PATH"],
            "HOME": str(tmp_path),
            "MLFLOW_TRACKING_URI": live_server.url,
            "MLFLOW_TRACKING_TOKEN": token_for(bob, ["read"]),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode == 0, loaded.stderr
    predictions = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert predictions == estimator.predict(features).tolist()
    assert len(set(predictions)) == 2  # both classes: the comparison means something


def test_another_users_files_cannot_be_injected_into_a_run_folder(
    live_server, monkeypatch, alice, bob, tmp_path
):
    join_team(bob, "contributor")  # a fellow contributor
    """The attack that once worked: bob PUTs an MLmodel and a pickle into alice's run folder,
    and alice's create_model_version from it takes them, credited to her."""
    mine, theirs = tmp_path / "w.bin", tmp_path / "evil.pkl"
    mine.write_bytes(b"alice's weights")
    theirs.write_bytes(b"cos\nsystem\n(S'id'\ntR.")
    client = as_token(monkeypatch, live_server, alice)
    client.create_registered_model("victim")
    MlflowArtifactsRepository("mlflow-artifacts:/team/run-x/model").log_artifact(str(mine))

    as_token(monkeypatch, live_server, bob)
    for folder in ("team/run-x/model", "team/run-x/model/sub", "team/run-x"):
        with pytest.raises(Exception, match="another user"):
            MlflowArtifactsRepository(f"mlflow-artifacts:/{folder}").log_artifact(str(theirs))
    # Nor does bob list or read what alice staged.
    assert MlflowArtifactsRepository("mlflow-artifacts:/team/run-x/model").list_artifacts() == []
    denied = requests.get(
        f"{live_server.url}/api/2.0/mlflow-artifacts/artifacts/team/run-x/model/w.bin",
        headers={"Authorization": f"Bearer {token_for(bob)}"},
        timeout=30,
    )
    assert denied.status_code == 404
    # A sibling run folder of his own is fine.
    MlflowArtifactsRepository("mlflow-artifacts:/team/run-y").log_artifact(str(theirs))
    assert set(ArtifactFile.objects.values_list("path", "created_by__username")) == {
        ("team/run-x/model/w.bin", "alice"),
        ("team/run-y/evil.pkl", "bob"),
    }

    # A file someone else left in the folder before these rules (or an admin put there) is
    # never taken silently: the version is refused, naming it.
    ArtifactFile.objects.create(
        path="team/run-x/model/MLmodel", size=1, sha256="0" * 64, created_by=bob
    )
    client = as_token(monkeypatch, live_server, alice)
    with pytest.raises(Exception, match="another user wrote"):
        client.create_model_version("victim", "mlflow-artifacts:/team/run-x/model")
    assert not ModelVersion.objects.filter(model__name="victim").exists()
    ArtifactFile.objects.filter(path="team/run-x/model/MLmodel").delete()
    version = client.create_model_version(
        "victim", "mlflow-artifacts:/team/run-x/model", await_creation_for=0
    )
    stored = ModelVersion.objects.get(model__name="victim", number=int(version.version))
    assert list(stored.files.values_list("path", "uploaded_by__username")) == [("w.bin", "alice")]
