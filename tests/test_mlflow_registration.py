"""MLflow's create_model_version answers READY once the pipeline is done: a real worker
(no beat, so no reconciler re-sends the job) verifies and scans the version while the
call waits, and the scan gate decides as before."""

import pickle

import pytest

from registry.models import Job, ModelVersion

from .test_mlflow import as_token
from .test_mlflow_artifacts import put_artifact

mlflow = pytest.importorskip("mlflow")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

MLMODEL = b"flavors:\n  python_function:\n    loader_module: mlflow.pyfunc.model\n"


def stage(live_server, user, folder: str, weights: bytes) -> str:
    put_artifact(live_server, user, f"{folder}/MLmodel", MLMODEL)
    put_artifact(live_server, user, f"{folder}/model.pkl", weights)
    return f"mlflow-artifacts:/{folder}"


def test_a_version_created_through_mlflow_is_ready_in_the_answer_without_beat(
    live_server, celery_worker, monkeypatch, settings, alice
):
    settings.MODELGATE_MLFLOW_CREATE_WAIT_SECONDS = 60  # bounded; a loaded machine is slow
    client = as_token(monkeypatch, live_server, alice)
    client.create_registered_model("fast")
    weights = pickle.dumps({"weights": bytes(range(256)) * 4096, "classes": ["no", "yes"]})
    source = stage(live_server, alice, "runs/fast-1/model", weights)

    # No client-side await: READY can only come from the create call's own answer.
    created = client.create_model_version("fast", source, await_creation_for=0)
    assert created.status == "READY", created.status_message
    stored = ModelVersion.objects.get(model__name="fast", number=int(created.version))
    assert stored.state == ModelVersion.State.READY
    assert stored.scan_status == "clean"
    assert stored.pipeline == {s: "done" for s in ("verify", "scan", "extract", "package")}
    job = Job.objects.get(kind="process_version", ref_id=stored.pk)
    assert (job.state, job.attempts) == (Job.State.DONE, 1)  # one run, sent on commit

    # The client's default await returns without polling too, READY in hand.
    again = client.create_model_version("fast", source)
    assert again.status == "READY"


def test_an_unsafe_pickle_is_still_refused_not_ready(
    live_server, celery_worker, monkeypatch, settings, alice
):
    settings.MODELGATE_MLFLOW_CREATE_WAIT_SECONDS = 60
    client = as_token(monkeypatch, live_server, alice)
    client.create_registered_model("guarded")
    source = stage(live_server, alice, "runs/evil/model", b"cos\nsystem\n(S'id'\ntR.")

    created = client.create_model_version("guarded", source, await_creation_for=0)
    assert created.status == "FAILED_REGISTRATION"
    assert "Quarantined" in created.status_message and "os.system" in created.status_message
    stored = ModelVersion.objects.get(model__name="guarded", number=int(created.version))
    assert stored.state == ModelVersion.State.QUARANTINED
    with pytest.raises(mlflow.exceptions.MlflowException, match="creation failed"):
        client.create_model_version("guarded", source)  # awaiting it fails, as MLflow does


def test_without_a_worker_the_answer_is_pending_after_the_bounded_wait(
    live_server, monkeypatch, settings, alice
):
    settings.MODELGATE_MLFLOW_CREATE_WAIT_SECONDS = 0.3
    client = as_token(monkeypatch, live_server, alice)
    client.create_registered_model("queued")
    source = stage(live_server, alice, "runs/queued/model", pickle.dumps([1, 2, 3]))

    created = client.create_model_version("queued", source, await_creation_for=0)
    assert created.status == "PENDING_REGISTRATION"
    stored = ModelVersion.objects.get(model__name="queued", number=int(created.version))
    assert stored.state == ModelVersion.State.PROCESSING
