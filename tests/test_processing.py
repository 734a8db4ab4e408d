"""A real Celery worker verifies finalized versions from the store."""

import httpx

from registry.models import Event, ModelVersion

from .conftest import sha256_of, token_for, wait_for


def push(live_server, token, model, files):
    headers = {"Authorization": f"Bearer {token}"}
    created = httpx.post(
        f"{live_server.url}/api/v1/models/{model}/versions/",
        headers=headers,
        json={
            "files": [{"path": p, "size": len(d), "sha256": sha256_of(d)} for p, d in files.items()]
        },
    ).json()
    for upload in created["uploads"]:
        httpx.put(upload["url"], content=files[upload["path"]], headers=headers).raise_for_status()
    number = created["version"]
    httpx.post(
        f"{live_server.url}/api/v1/models/{model}/versions/{number}/finalize/", headers=headers
    ).raise_for_status()
    return number


def state_of(number):
    return ModelVersion.objects.get(number=number).state


def test_a_finalized_version_becomes_ready_through_the_worker(alice, live_server, celery_worker):
    token = token_for(alice)
    httpx.post(
        f"{live_server.url}/api/v1/models/",
        json={"name": "churn"},
        headers={"Authorization": f"Bearer {token}"},
    ).raise_for_status()
    number = push(live_server, token, "churn", {"model.pkl": b"weights", "README.md": b"# hi"})
    assert wait_for(lambda: state_of(number) != "processing" and state_of(number)) == "ready"
    assert Event.objects.filter(type="version.ready", model_name="churn").count() == 1


def test_a_blob_altered_in_the_store_fails_the_version(
    alice, live_server, transactional_db, store_root, request
):
    token = token_for(alice)
    httpx.post(
        f"{live_server.url}/api/v1/models/",
        json={"name": "tampered"},
        headers={"Authorization": f"Bearer {token}"},
    ).raise_for_status()
    data = b"original bytes of the model"
    number = push(live_server, token, "tampered", {"model.bin": data})
    digest = sha256_of(data)
    blob = store_root / "sha256" / digest[:2] / digest[2:4] / digest
    blob.chmod(0o644)
    blob.write_bytes(b"ORIGINAL bytes of the model")  # same size, other bytes
    request.getfixturevalue("celery_worker")
    assert wait_for(lambda: state_of(number) != "processing" and state_of(number)) == "failed"
    version = ModelVersion.objects.get(number=number)
    assert "model.bin: stored bytes do not match" in version.status_reason
    assert Event.objects.get(type="version.failed").data["reason"] == version.status_reason
