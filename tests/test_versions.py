"""Versions: declared, uploaded, finalized, numbered without gaps or reuse."""

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from registry.models import Event, ModelVersion

from .conftest import declare, sha256_of, token_for, upload_version


def test_a_declared_version_lists_its_upload_urls(alice_api, model):
    response = declare(
        alice_api,
        model,
        {"model.pkl": b"abc", "conf/params.json": b"{}"},
        metrics={"accuracy": 0.93},
        params={"depth": "4"},
        lineage={"code_commit": "abc123", "dataset": "s3://d/v1"},
    )
    assert response.status_code == 201
    body = response.json()
    assert body["version"] == 1 and body["state"] == "uploading"
    assert [u["path"] for u in body["uploads"]] == ["conf/params.json", "model.pkl"]
    assert body["uploads"][1]["url"].endswith("/api/v1/models/fraud/versions/1/files/model.pkl")


def test_the_full_flow_gives_a_processing_version_with_everything_recorded(alice_api, model):
    number = upload_version(
        alice_api,
        model,
        {"model.pkl": b"weights"},
        metrics={"accuracy": 0.9},
        tags={"stage": "exp"},
    )
    detail = alice_api.get(f"/api/v1/models/{model}/versions/{number}/").json()
    assert detail["state"] == "processing"
    assert detail["files"] == [
        {
            "path": "model.pkl",
            "size": 7,
            "sha256": sha256_of(b"weights"),
            "complete": True,
            "download_url": f"http://testserver/api/v1/models/{model}/versions/1/files/model.pkl",
        }
    ]
    assert detail["metrics"] == {"accuracy": 0.9} and detail["created_by"] == "alice"
    types = list(Event.objects.filter(model_name=model).values_list("type", flat=True))
    assert types == ["version.finalized", "version.created", "model.created"]


def test_finalize_refuses_while_files_are_missing(alice_api, model):
    number = declare(alice_api, model, {"a.bin": b"a", "b.bin": b"b"}).json()["version"]
    alice_api.put(
        f"/api/v1/models/{model}/versions/{number}/files/a.bin",
        b"a",
        content_type="application/octet-stream",
    )
    response = alice_api.post(f"/api/v1/models/{model}/versions/{number}/finalize/")
    assert response.status_code == 409
    assert response.json()["error"]["details"]["missing"] == ["b.bin"]
    assert ModelVersion.objects.get().state == "uploading"


@pytest.mark.parametrize(
    "body",
    [
        {"files": []},
        {"files": [{"path": "a", "size": -1, "sha256": "0" * 64}]},
        {"files": [{"path": "a", "size": 1, "sha256": "xyz"}]},
        {"files": [{"path": "a", "size": 1, "sha256": "0" * 64}] * 2},
        {
            "files": [
                {"path": "a", "size": 1, "sha256": "0" * 64},
                {"path": "a/b", "size": 1, "sha256": "0" * 64},
            ]
        },
        {"files": [{"path": "a", "size": 1, "sha256": "0" * 64}], "metrics": {"acc": "high"}},
        {"files": [{"path": "a", "size": 1, "sha256": "0" * 64}], "metrics": {"acc": float("nan")}},
        {"files": [{"path": "a", "size": 1, "sha256": "0" * 64}], "params": {"depth": 4}},
        {"files": [{"path": "a", "size": 1, "sha256": "0" * 64}], "lineage": {"who": "me"}},
        {"files": [{"path": "a", "size": 1, "sha256": "0" * 64}], "state": "ready"},
        {"files": "a"},
    ],
)
def test_bad_version_metadata_is_refused_and_nothing_is_created(alice_api, model, body):
    raw = json.dumps(body, allow_nan=True)
    response = alice_api.post(
        f"/api/v1/models/{model}/versions/", raw, content_type="application/json"
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"]["message"]
    assert not ModelVersion.objects.exists()


def test_a_file_too_large_is_413(alice_api, model, settings):
    settings.MODELGATE_MAX_FILE_SIZE = 10
    response = declare(alice_api, model, {"big.bin": b"x" * 11})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


def test_files_and_metrics_of_a_version_never_change(alice_api, model):
    number = upload_version(alice_api, model, {"m.bin": b"m"}, metrics={"accuracy": 0.5})
    url = f"/api/v1/models/{model}/versions/{number}/"
    assert alice_api.patch(url, {"metrics": {"accuracy": 1.0}}, format="json").status_code == 400
    assert alice_api.patch(url, {"files": []}, format="json").status_code == 400
    response = alice_api.patch(url, {"description": "better", "tags": {"k": "v"}}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert (body["description"], body["tags"], body["metrics"]) == (
        "better",
        {"k": "v"},
        {"accuracy": 0.5},
    )
    put = alice_api.put(f"{url}files/m.bin", b"n", content_type="application/octet-stream")
    assert put.status_code == 409


def test_multipart_keeps_folders_and_streams_into_the_store(
    alice, model, live_server, transactional_db
):
    token = token_for(alice)
    files = [
        ("files", ("weights/model.pkl", b"pickle-bytes", "application/octet-stream")),
        ("files", ("README.md", b"# Card", "text/markdown")),
    ]
    response = httpx.post(
        f"{live_server.url}/api/v1/models/{model}/versions/",
        headers={"Authorization": f"Bearer {token}"},
        files=files,
        data={"metadata": json.dumps({"metrics": {"auc": 0.8}})},
    )
    assert response.status_code == 201, response.text
    assert response.json()["state"] == "processing"
    version = ModelVersion.objects.get()
    assert sorted(version.files.values_list("path", "sha256")) == [
        ("README.md", sha256_of(b"# Card")),
        ("weights/model.pkl", sha256_of(b"pickle-bytes")),
    ]
    assert version.metrics == {"auc": 0.8}


def test_multipart_with_a_traversal_filename_is_refused(
    alice, model, live_server, transactional_db
):
    token = token_for(alice)
    response = httpx.post(
        f"{live_server.url}/api/v1/models/{model}/versions/",
        headers={"Authorization": f"Bearer {token}"},
        files=[("files", ("../../evil.py", b"x", "text/plain"))],
    )
    assert response.status_code == 400
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_creates_get_versions_one_to_fifty(alice, live_server):
    token = token_for(alice)
    headers = {"Authorization": f"Bearer {token}"}
    httpx.post(f"{live_server.url}/api/v1/models/", json={"name": "race"}, headers=headers)
    body = {"files": [{"path": "m.bin", "size": 1, "sha256": "0" * 64}]}

    def create(_):
        with httpx.Client(timeout=60) as client:
            return client.post(
                f"{live_server.url}/api/v1/models/race/versions/", json=body, headers=headers
            )

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(create, range(50)))
    assert [r.status_code for r in responses] == [201] * 50
    numbers = sorted(r.json()["version"] for r in responses)
    assert numbers == list(range(1, 51))
    assert sorted(ModelVersion.objects.values_list("number", flat=True)) == list(range(1, 51))


def test_numbers_are_never_reused_after_a_failed_create(alice_api, model):
    upload_version(alice_api, model, {"a": b"a"})
    assert declare(alice_api, model, {"../bad": b"x"}).status_code == 400
    assert declare(alice_api, model, {"b": b"b"}).json()["version"] == 2


def test_versions_are_filtered_by_state_tag_metric_and_alias(alice_api, model, admin_user):
    for accuracy, tag in [(0.7, "a"), (0.95, "b"), (0.91, "b")]:
        upload_version(
            alice_api,
            model,
            {"m": str(accuracy).encode()},
            metrics={"accuracy": accuracy},
            tags={"group": tag},
        )
    ModelVersion.objects.filter(number=2).update(state="ready")
    base = f"/api/v1/models/{model}/versions/"

    def numbers(query):
        response = alice_api.get(base + query)
        assert response.status_code == 200, response.content
        return [v["version"] for v in response.json()["results"]]

    assert numbers("") == [3, 2, 1]
    assert numbers("?ordering=number") == [1, 2, 3]
    assert numbers("?metric=accuracy>=0.9") == [3, 2]
    assert numbers("?metric=accuracy>0.92&tag=group:b") == [2]
    assert numbers("?metric=accuracy<0.9") == [1]
    assert numbers("?state=ready") == [2]
    assert numbers("?tag=group:a") == [1]
    alice_api.put(f"/api/v1/models/{model}/aliases/champion/", {"version": 2}, format="json")
    assert numbers("?alias=champion") == [2]
    for bad in ["?metric=accuracy", "?metric=acc>>1", "?state=done", "?ordering=secret"]:
        assert alice_api.get(base + bad).status_code == 400, bad


def test_latest_and_alias_refs_resolve(alice_api, model):
    for data in (b"one", b"two", b"three"):
        upload_version(alice_api, model, {"m": data})
    ModelVersion.objects.filter(number__in=[1, 2]).update(state="ready", scan_status="clean")
    # `latest` is the newest ready version whose scan is clean: not an unverified one.
    ModelVersion.objects.filter(number=3).update(state="ready", scan_status="unverified")
    assert alice_api.get(f"/api/v1/models/{model}/versions/latest/").json()["version"] == 2
    assert alice_api.get(f"/api/v1/models/{model}/").json()["latest_version"] == 2
    alice_api.put(f"/api/v1/models/{model}/aliases/champion/", {"version": 1}, format="json")
    assert alice_api.get(f"/api/v1/models/{model}/versions/@champion/").json()["version"] == 1
    assert alice_api.get(f"/api/v1/models/{model}/versions/@nope/").status_code == 404
    assert alice_api.get(f"/api/v1/models/{model}/versions/first/").status_code == 400


def test_archiving_refuses_a_version_an_alias_points_at(alice_api, model):
    upload_version(alice_api, model, {"m": b"m"})
    ModelVersion.objects.update(state="ready")
    alice_api.put(f"/api/v1/models/{model}/aliases/champion/", {"version": 1}, format="json")
    response = alice_api.post(f"/api/v1/models/{model}/versions/1/archive/")
    assert response.status_code == 409
    alice_api.delete(f"/api/v1/models/{model}/aliases/champion/")
    response = alice_api.post(f"/api/v1/models/{model}/versions/1/archive/")
    assert response.status_code == 200 and response.json()["state"] == "archived"
