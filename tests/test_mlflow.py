"""The real MLflow client against a live Modelgate: the registry subset of the REST API."""

import pytest
import requests

from registry.models import Environment, Event, ModelVersion, RegisteredModel

from .conftest import client_for, token_for, upload_version

mlflow = pytest.importorskip("mlflow")
from mlflow.exceptions import MlflowException  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)


def _client(live_server):
    return mlflow.MlflowClient(tracking_uri=live_server.url, registry_uri=live_server.url)


def _clear_auth(monkeypatch):
    for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def as_token(monkeypatch, live_server, user, scopes=None):
    """A client for `user`; the environment points MLflow's module-level calls here too."""
    _clear_auth(monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", live_server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token_for(user, scopes))
    return _client(live_server)


def as_basic(monkeypatch, live_server, username, password):
    _clear_auth(monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", live_server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    return _client(live_server)


def error_code(call, *args, **kwargs) -> str:
    with pytest.raises(MlflowException) as info:
        call(*args, **kwargs)
    return info.value.error_code


def ready_version(api, model: str, run_id: str = "") -> int:
    lineage = {"run_id": run_id} if run_id else {}
    number = upload_version(api, model, {"m.bin": f"{model}-{run_id}".encode()}, lineage=lineage)
    ModelVersion.objects.filter(model__name=model, number=number).update(state="ready")
    return number


def test_registered_model_round_trip(live_server, monkeypatch, alice, admin_user):
    client = as_token(monkeypatch, live_server, alice)
    created = client.create_registered_model(
        "churn", tags={"team": "growth"}, description="Churn model"
    )
    assert created.name == "churn"
    assert created.description == "Churn model"
    assert created.tags == {"team": "growth"}
    assert created.creation_timestamp > 1_600_000_000_000  # milliseconds

    fetched = client.get_registered_model("churn")
    assert (fetched.name, fetched.description, fetched.tags) == (
        "churn",
        "Churn model",
        {"team": "growth"},
    )

    updated = client.update_registered_model("churn", description="Who leaves")
    assert updated.description == "Who leaves"
    assert RegisteredModel.objects.get(name="churn").description == "Who leaves"

    client.set_registered_model_tag("churn", "tier", "gold")
    assert client.get_registered_model("churn").tags == {"team": "growth", "tier": "gold"}
    client.delete_registered_model_tag("churn", "team")
    assert client.get_registered_model("churn").tags == {"tier": "gold"}
    assert error_code(client.delete_registered_model_tag, "churn", "nope") == (
        "RESOURCE_DOES_NOT_EXIST"
    )

    # The same audit trail as the native API.
    types = list(Event.objects.filter(model_name="churn").values_list("type", flat=True))
    assert "model.created" in types and types.count("model.updated") == 3

    # Deleting is for administrators.
    assert error_code(client.delete_registered_model, "churn") == "PERMISSION_DENIED"
    admin = as_token(monkeypatch, live_server, admin_user)
    admin.delete_registered_model("churn")
    assert not RegisteredModel.objects.filter(name="churn").exists()
    assert error_code(admin.get_registered_model, "churn") == "RESOURCE_DOES_NOT_EXIST"


def test_error_codes(live_server, monkeypatch, alice):
    client = as_token(monkeypatch, live_server, alice)
    assert error_code(client.get_registered_model, "missing") == "RESOURCE_DOES_NOT_EXIST"
    client.create_registered_model("dup")
    assert error_code(client.create_registered_model, "dup") == "RESOURCE_ALREADY_EXISTS"
    assert error_code(client.create_registered_model, "bad/name") == "INVALID_PARAMETER_VALUE"
    assert error_code(client.get_model_version, "dup", "7") == "RESOURCE_DOES_NOT_EXIST"
    # A digit Python's isdigit() accepts but int() does not: a 400, never a 500.
    assert error_code(client.get_model_version, "dup", "¹") == "INVALID_PARAMETER_VALUE"
    assert error_code(client.get_model_version_by_alias, "dup", "champion") == (
        "RESOURCE_DOES_NOT_EXIST"
    )
    assert error_code(client.search_registered_models, "owner = 'x'") == ("INVALID_PARAMETER_VALUE")


def test_search_registered_models(live_server, monkeypatch, alice):
    client = as_token(monkeypatch, live_server, alice)
    for name in ("fraud-eu", "fraud-us", "churn", "xsell"):
        client.create_registered_model(name, tags={"kind": name.split("-")[0]})

    names = lambda models: [m.name for m in models]  # noqa: E731
    assert names(client.search_registered_models()) == ["churn", "fraud-eu", "fraud-us", "xsell"]
    assert names(client.search_registered_models("name LIKE 'fraud%'")) == [
        "fraud-eu",
        "fraud-us",
    ]
    assert names(client.search_registered_models("name ILIKE '%FRAUD-E%'")) == ["fraud-eu"]
    assert names(client.search_registered_models("name = 'churn'")) == ["churn"]
    assert names(client.search_registered_models("tags.kind = 'fraud'")) == [
        "fraud-eu",
        "fraud-us",
    ]
    assert names(client.search_registered_models(order_by=["name DESC"])) == [
        "xsell",
        "fraud-us",
        "fraud-eu",
        "churn",
    ]

    first = client.search_registered_models(max_results=3)
    assert names(first) == ["churn", "fraud-eu", "fraud-us"] and first.token
    second = client.search_registered_models(max_results=3, page_token=first.token)
    assert names(second) == ["xsell"] and not second.token


def test_native_versions_are_visible_through_mlflow(live_server, monkeypatch, alice):
    api = client_for(alice)
    assert api.post("/api/v1/models/", {"name": "fraud"}, format="json").status_code == 201
    first = ready_version(api, "fraud", run_id="run-a")
    second = ready_version(api, "fraud", run_id="run-b")
    pending = upload_version(api, "fraud", {"m.bin": b"pending"})
    ModelVersion.objects.filter(number=pending).update(state="processing")

    client = as_token(monkeypatch, live_server, alice)
    version = client.get_model_version("fraud", str(first))
    assert (version.name, version.version, version.run_id) == ("fraud", str(first), "run-a")
    assert version.status == "READY"
    assert version.current_stage == "None"
    assert version.user_id == "alice"
    assert version.creation_timestamp > 1_600_000_000_000
    assert client.get_model_version("fraud", str(pending)).status == "PENDING_REGISTRATION"

    found = client.search_model_versions("name='fraud'")
    assert sorted(int(v.version) for v in found) == sorted([first, second, pending])
    page = client.search_model_versions("name='fraud'", max_results=2)
    assert [int(v.version) for v in page] == [pending, second] and page.token
    rest = client.search_model_versions("name='fraud'", max_results=2, page_token=page.token)
    assert [int(v.version) for v in rest] == [first] and not rest.token
    assert client.search_model_versions("name='nothing'") == []
    by_run = client.search_model_versions("run_id='run-b'")
    assert [(v.name, v.version) for v in by_run] == [("fraud", str(second))]

    latest = client.get_latest_versions("fraud")
    assert [v.version for v in latest] == [str(pending)]
    assert client.get_latest_versions("fraud", stages=["Production"]) == []

    updated = client.update_model_version("fraud", str(first), description="baseline")
    assert updated.description == "baseline"
    assert ModelVersion.objects.get(number=first).description == "baseline"

    client.set_model_version_tag("fraud", str(first), "validated", "yes")
    assert client.get_model_version("fraud", str(first)).tags == {"validated": "yes"}
    client.delete_model_version_tag("fraud", str(first), "validated")
    assert client.get_model_version("fraud", str(first)).tags == {}

    uri = client.get_model_version_download_uri("fraud", str(first))
    # With the host, so it resolves whatever the tracking URI is (tests/test_mlflow_uris.py).
    assert uri == f"{live_server.url}/api/2.0/mlflow-artifacts/artifacts/modelgate/fraud/{first}"

    assert error_code(client.get_model_version, "fraud", "x") == "INVALID_PARAMETER_VALUE"

    # Aliases: plain ones move, protected environments refuse.
    client.set_registered_model_alias("fraud", "champion", str(second))
    assert client.get_model_version_by_alias("fraud", "champion").version == str(second)
    assert client.get_registered_model("fraud").aliases == {"champion": str(second)}
    assert client.get_model_version("fraud", str(second)).aliases == ["champion"]
    assert api.get("/api/v1/models/fraud/versions/@champion/").json()["version"] == second
    assert error_code(client.set_registered_model_alias, "fraud", "champion", str(pending)) == (
        "INVALID_PARAMETER_VALUE"
    )
    client.delete_registered_model_alias("fraud", "champion")
    assert error_code(client.get_model_version_by_alias, "fraud", "champion") == (
        "RESOURCE_DOES_NOT_EXIST"
    )

    Environment.objects.create(name="production")
    with pytest.raises(MlflowException) as info:
        client.set_registered_model_alias("fraud", "production", str(second))
    assert info.value.error_code == "PERMISSION_DENIED"
    assert "promotion" in info.value.message
    assert not ModelVersion.objects.get(number=second).aliases.exists()
    assert error_code(client.delete_registered_model_alias, "fraud", "production") == (
        "PERMISSION_DENIED"
    )


def test_auth(live_server, monkeypatch, alice, reader):
    client = as_basic(monkeypatch, live_server, "alice", "alice-password-1")
    assert client.create_registered_model("basic-made").name == "basic-made"
    assert RegisteredModel.objects.get(name="basic-made").created_by == alice

    wrong = as_basic(monkeypatch, live_server, "alice", "wrong")
    assert error_code(wrong.get_registered_model, "basic-made") == "UNAUTHENTICATED"

    # A read-only token reads but may not write; a reader's role may not write either.
    read_only = as_token(monkeypatch, live_server, alice, ["read"])
    assert read_only.get_registered_model("basic-made").name == "basic-made"
    assert error_code(read_only.create_registered_model, "other") == "PERMISSION_DENIED"
    readers = as_token(monkeypatch, live_server, reader)
    assert error_code(readers.create_registered_model, "other") == "PERMISSION_DENIED"

    bad_token = as_token(monkeypatch, live_server, alice)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "mg_nope_nope")
    assert error_code(bad_token.get_registered_model, "basic-made") == "UNAUTHENTICATED"

    _clear_auth(monkeypatch)
    anonymous = _client(live_server)
    assert error_code(anonymous.get_registered_model, "basic-made") == "UNAUTHENTICATED"
    raw = requests.get(
        f"{live_server.url}/api/2.0/mlflow/registered-models/get", params={"name": "basic-made"}
    )
    assert raw.status_code == 401
    assert raw.json()["error_code"] == "UNAUTHENTICATED"


def test_unknown_endpoint_is_mlflow_shaped(live_server, alice):
    response = requests.post(
        f"{live_server.url}/api/2.0/mlflow/experiments/delete",  # not served
        headers={"Authorization": f"Bearer {token_for(alice)}"},
        json={},
    )
    assert response.status_code == 404
    assert response.json()["error_code"] == "ENDPOINT_NOT_FOUND"
