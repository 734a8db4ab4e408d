"""No user-supplied path reaches outside the blob store, in any spelling."""

import pytest

from registry.errors import InvalidPath
from registry.storage import validate_file_path

from .conftest import declare, sha256_of

BAD_PATHS = [
    "../x",
    "a/../../x",
    "/abs",
    "..\\x",
    "%2e%2e/x",
    "%252e%252e/x",
    "a\x00b",
    "a//b",
    "a/./b",
    ".",
    "..",
    "a/",
    "",
    "x/%2e%2e/%2e%2e/etc/passwd",
    "%2fetc%2fpasswd",
    "%25252e%25252e/x",
    "a\nb",
    "C:\\windows",
]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_validator_refuses_traversal_and_malformed_paths(path):
    with pytest.raises(InvalidPath):
        validate_file_path(path)


@pytest.mark.parametrize(
    "path", ["model.pkl", "a/b/c.bin", "weights v2.pt", "dir.d/x..y", "100%/x", "a%20b"]
)
def test_validator_accepts_ordinary_paths(path):
    assert validate_file_path(path) == path


def snapshot(root):
    return sorted((str(p), p.stat().st_size) for p in root.rglob("*"))


@pytest.mark.parametrize("path", BAD_PATHS[:8])
def test_declaring_a_bad_path_is_refused_and_nothing_is_written(
    alice_api, model, path, store_root, tmp_path
):
    outside = store_root.parent
    before = snapshot(outside)
    response = declare(alice_api, model, {path: b"payload"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert snapshot(outside) == before


# URL-level spellings: what a client would put in the request line. The test client sends
# the path as given (after one percent-decoding, as a WSGI server does).
URL_PATHS = ["../x", "a/../../x", "/abs", "..\\x", "%2e%2e/x", "%252e%252e/x", "a%00b", "a//b"]


@pytest.mark.parametrize("raw", URL_PATHS)
def test_uploading_or_downloading_a_bad_path_is_refused(alice_api, model, raw, store_root):
    ok = declare(alice_api, model, {"good.bin": b"payload"})
    number = ok.json()["version"]
    outside = store_root.parent
    before = snapshot(outside)
    url = f"/api/v1/models/{model}/versions/{number}/files/{raw}"
    put = alice_api.put(url, b"evil", content_type="application/octet-stream")
    get = alice_api.get(url)
    assert put.status_code == 400, (raw, put.content)
    assert get.status_code == 400, (raw, get.content)
    assert snapshot(outside) == before


def test_a_good_path_still_uploads(alice_api, model):
    number = declare(alice_api, model, {"dir/good.bin": b"payload"}).json()["version"]
    put = alice_api.put(
        f"/api/v1/models/{model}/versions/{number}/files/dir/good.bin",
        b"payload",
        content_type="application/octet-stream",
    )
    assert put.status_code == 200
    assert put.json()["sha256"] == sha256_of(b"payload")
