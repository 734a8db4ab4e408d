"""Streamed downloads: ETag, Range, attachment, nosniff, @alias and latest."""

import os

from registry.models import ModelVersion

from .conftest import sha256_of, upload_version


def body(response) -> bytes:
    return b"".join(response.streaming_content)


def test_a_download_streams_with_safe_headers(alice_api, model):
    data = os.urandom(100_000)
    upload_version(alice_api, model, {"dir/model.pkl": data})
    response = alice_api.get(f"/api/v1/models/{model}/versions/1/files/dir/model.pkl")
    assert response.status_code == 200
    assert response.streaming
    assert body(response) == data
    assert response["ETag"] == f'"{sha256_of(data)}"'
    assert response["Content-Disposition"] == 'attachment; filename="model.pkl"'
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Length"] == "100000"


def test_ranges_give_206_and_416(alice_api, model):
    data = os.urandom(10_000)
    upload_version(alice_api, model, {"m.bin": data})
    url = f"/api/v1/models/{model}/versions/1/files/m.bin"
    part = alice_api.get(url, HTTP_RANGE="bytes=100-199")
    assert part.status_code == 206 and body(part) == data[100:200]
    assert part["Content-Range"] == "bytes 100-199/10000"
    suffix = alice_api.get(url, HTTP_RANGE="bytes=-10")
    assert body(suffix) == data[-10:]
    open_ended = alice_api.get(url, HTTP_RANGE="bytes=9990-")
    assert body(open_ended) == data[9990:]
    assert alice_api.get(url, HTTP_RANGE="bytes=20000-").status_code == 416
    stale = alice_api.get(url, HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE='"other"')
    assert stale.status_code == 200 and body(stale) == data


def test_an_unchanged_file_answers_304(alice_api, model):
    upload_version(alice_api, model, {"m.bin": b"abc"})
    url = f"/api/v1/models/{model}/versions/1/files/m.bin"
    assert alice_api.get(url, HTTP_IF_NONE_MATCH=f'"{sha256_of(b"abc")}"').status_code == 304


def test_files_download_through_aliases_and_latest(alice_api, model):
    upload_version(alice_api, model, {"m.bin": b"one"})
    upload_version(alice_api, model, {"m.bin": b"two"})
    ModelVersion.objects.update(state="ready", scan_status="clean")
    alice_api.put(f"/api/v1/models/{model}/aliases/production-ish/", {"version": 1}, format="json")
    base = f"/api/v1/models/{model}/versions"
    assert body(alice_api.get(f"{base}/@production-ish/files/m.bin")) == b"one"
    assert body(alice_api.get(f"{base}/latest/files/m.bin")) == b"two"


def test_an_incomplete_file_is_not_downloadable(alice_api, model):
    alice_api.post(
        f"/api/v1/models/{model}/versions/",
        {"files": [{"path": "m.bin", "size": 3, "sha256": sha256_of(b"abc")}]},
        format="json",
    )
    assert alice_api.get(f"/api/v1/models/{model}/versions/1/files/m.bin").status_code == 404


def test_a_package_that_is_not_built_is_a_conflict(alice_api, model):
    upload_version(alice_api, model, {"m.bin": b"abc"})
    response = alice_api.get(f"/api/v1/models/{model}/versions/1/package/")
    assert response.status_code == 409
