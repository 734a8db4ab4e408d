"""Encryption at rest: nothing readable on disk or in the bucket, damage detected, keys rotated.

Must-show 2 of issue 9: with encryption on, the stored bytes (blobs, staged parts,
packages) hold no 4 KiB run of any uploaded file; a flipped byte makes the download fail
with a clear error and `verify_store` exit non-zero naming the version; after
`rotate_keys`, a server restarted with only the new key serves every file byte-identical.
"""

import io
import json
import logging
import os
from pathlib import Path

import httpx
import pytest

from registry.models import Event, ModelVersion
from registry.storage import BlobCorrupt, get_store
from registry.storage.encrypted import HEADER_SIZE, SEGMENT_SIZE, TAG_SIZE, EncryptedObjects
from registry.storage.keys import Keyring, KeyUnavailable, key_id, parse_key
from registry.storage.local import LocalObjects
from registry.storage.objects import ContentStore, blob_name

from .conftest import client_for, declare, sha256_of, upload_version, wait_for
from .processes import Web
from .storage_support import (
    bucket_objects,
    manage,
    new_key,
    s3_client,
    shares_a_run,
    store_env,
)

pytest_plugins = ["tests.storage_fixtures"]  # moto, s3_env, bucket fixtures

MIB = 1024 * 1024


class LocalBackend:
    def __init__(self, root: Path):
        self.root, self.url = root, f"file://{root}"

    def stored(self) -> dict[str, bytes]:
        return {
            str(p.relative_to(self.root)): p.read_bytes()
            for p in self.root.rglob("*")
            if p.is_file()
        }

    def flip(self, digest: str, offset: int) -> None:
        path = self.root / blob_name(digest)
        data = bytearray(path.read_bytes())
        data[offset] ^= 0x01
        path.write_bytes(bytes(data))


class S3Backend:
    def __init__(self, bucket: str):
        self.bucket, self.url = bucket, f"s3://{bucket}/blobs"

    def stored(self) -> dict[str, bytes]:
        return bucket_objects(self.bucket)

    def flip(self, digest: str, offset: int) -> None:
        key = f"blobs/{blob_name(digest)}"
        data = bytearray(s3_client().get_object(Bucket=self.bucket, Key=key)["Body"].read())
        data[offset] ^= 0x01
        s3_client().put_object(Bucket=self.bucket, Key=key, Body=bytes(data))


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path, settings):
    if request.param == "local":
        chosen = LocalBackend(tmp_path / "store")
    else:
        chosen = S3Backend(request.getfixturevalue("bucket"))
    settings.MODELGATE_STORAGE_URL = chosen.url
    settings.MODELGATE_ENCRYPTION_KEY = new_key()
    settings.MODELGATE_ENCRYPTION_OLD_KEYS = []
    return chosen


def put_chunk(client, url: str, data: bytes, start: int, end: int):
    return client.put(
        url,
        data[start:end],
        content_type="application/octet-stream",
        HTTP_CONTENT_RANGE=f"bytes {start}-{end - 1}/{len(data)}",
    )


def test_the_detector_finds_a_4k_run_when_there_is_one():
    data = os.urandom(64 * 1024)
    assert shares_a_run(data, b"prefix" + data[10_001:14_097] + b"suffix")
    assert not shares_a_run(data, b"prefix" + data[10_001:12_048] + b"suffix")  # 2047 bytes


def test_stored_bytes_hold_no_4k_run_of_any_file(backend, alice, celery_worker):
    api = client_for(alice)
    api.post("/api/v1/models/", {"name": "fraud"}, format="json")
    weights = os.urandom(2 * MIB + 12345)
    card = b"# Fraud model\n\n" + b"Trained on card transactions; threshold 0.5.\n" * 8000
    response = declare(api, "fraud", {"weights.bin": weights, "README.md": card})
    assert response.status_code == 201
    url = "/api/v1/models/fraud/versions/1/files/"

    # staged parts: half of each file is in the store, not yet verified
    assert put_chunk(api, url + "weights.bin", weights, 0, MIB + 7).status_code == 200
    assert put_chunk(api, url + "README.md", card, 0, 100_000).status_code == 200
    staged = backend.stored()
    assert any("parts/" in name for name in staged)
    for name, stored in staged.items():
        assert not shares_a_run(weights, stored), name
        assert not shares_a_run(card, stored), name

    assert put_chunk(api, url + "weights.bin", weights, MIB + 7, len(weights)).status_code == 200
    assert put_chunk(api, url + "README.md", card, 100_000, len(card)).status_code == 200
    assert api.post("/api/v1/models/fraud/versions/1/finalize/").status_code == 200
    wait_for(lambda: ModelVersion.objects.get(number=1).state == "ready", timeout=60)
    version = ModelVersion.objects.get(number=1)
    assert version.package_state == "ready"

    stored = backend.stored()
    names = set(stored)
    assert {f"blobs/{blob_name(sha256_of(weights))}", blob_name(sha256_of(weights))} & names
    assert not any("parts/" in name for name in stored)
    for name, data in stored.items():
        assert not shares_a_run(weights, data), name
        assert not shares_a_run(card, data), name
    # yet the API serves the plaintext, whole and by range, and the package holds it
    got = api.get(url + "weights.bin")
    assert b"".join(got.streaming_content) == weights
    got = api.get(url + "README.md", HTTP_RANGE="bytes=5000-9999")
    assert got.status_code == 206 and b"".join(got.streaming_content) == card[5000:10000]
    package = api.get("/api/v1/models/fraud/versions/1/package/")
    assert shares_a_run(weights, b"".join(package.streaming_content))


def test_a_flipped_byte_fails_the_download_and_verify_store_names_the_version(
    backend, alice, transactional_db
):
    api = client_for(alice)
    api.post("/api/v1/models/", {"name": "fraud"}, format="json")
    data = os.urandom(3 * MIB)
    other = os.urandom(1000)
    upload_version(api, "fraud", {"model.bin": data, "notes.txt": other})
    url = "/api/v1/models/fraud/versions/1/files/model.bin"
    assert manage(store_env(), "verify_store").returncode == 0

    # damage in the second segment: the first one still streams, then the stream stops
    backend.flip(sha256_of(data), HEADER_SIZE + (SEGMENT_SIZE + TAG_SIZE) + 100)
    response = api.get(url)
    assert response.status_code == 200  # the damage lies past what was read to start
    received = bytearray()
    with pytest.raises(BlobCorrupt, match="segment 1 failed authentication"):
        for chunk in response.streaming_content:
            received += chunk
    assert bytes(received) == data[: len(received)] and len(received) < len(data)
    # ranges decrypt only their segments: the intact first one is still served
    first = api.get(url, HTTP_RANGE=f"bytes=0-{SEGMENT_SIZE - 1}")
    assert first.status_code == 206 and b"".join(first.streaming_content) == data[:SEGMENT_SIZE]
    damaged = api.get(url, HTTP_RANGE=f"bytes={SEGMENT_SIZE}-{SEGMENT_SIZE + 10}")
    assert damaged.status_code == 500
    assert damaged.json()["error"]["code"] == "corrupt_blob"

    # damage in the first segment: a clear error before any byte is sent
    backend.flip(sha256_of(data), HEADER_SIZE + 10)
    response = api.get(url)
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "corrupt_blob" and "integrity check" in error["message"]

    result = manage(store_env(), "verify_store")
    assert result.returncode != 0, result.stdout
    assert f"{sha256_of(data)}: corrupt" in result.stdout
    assert "used by fraud v1 (model.bin)" in result.stdout
    assert sha256_of(other) not in result.stdout  # the intact file is not reported
    assert "1 damaged, 0 missing" in result.stderr

    # The version is marked: an audit event and its status_reason say what is wrong.
    version = ModelVersion.objects.get(model__name="fraud", number=1)
    assert version.status_reason.startswith("Integrity check failed: model.bin corrupt")
    events = Event.objects.filter(type="version.integrity_failed", version_number=1)
    assert [e.data["files"] for e in events] == [["model.bin"]]
    assert manage(store_env(), "verify_store").returncode != 0
    assert events.count() == 1  # a nightly re-run does not repeat the event


def test_verify_store_reports_a_missing_blob(backend, alice, transactional_db):
    api = client_for(alice)
    api.post("/api/v1/models/", {"name": "fraud"}, format="json")
    data = os.urandom(5000)
    upload_version(api, "fraud", {"model.bin": data})
    get_store().delete(sha256_of(data))
    result = manage(store_env(), "verify_store")
    assert result.returncode != 0
    assert f"{sha256_of(data)}: missing from the store; used by fraud v1 (model.bin)" in (
        result.stdout
    )
    reason = ModelVersion.objects.get(model__name="fraud", number=1).status_reason
    assert "model.bin missing from the store" in reason


def test_the_daily_sample_marks_what_it_finds(backend, alice, transactional_db, settings):
    """The beat task re-hashes a random share of the referenced blobs (here all of them)."""
    from workers.tasks import verify_sample

    api = client_for(alice)
    api.post("/api/v1/models/", {"name": "fraud"}, format="json")
    data = os.urandom(2 * MIB)
    upload_version(api, "fraud", {"model.bin": data})
    settings.MODELGATE_VERIFY_SAMPLE = 1.0
    assert verify_sample() == 0
    assert not Event.objects.filter(type="version.integrity_failed").exists()
    backend.flip(sha256_of(data), HEADER_SIZE + SEGMENT_SIZE + TAG_SIZE + 7)
    assert verify_sample() == 1
    assert Event.objects.filter(type="version.integrity_failed", version_number=1).count() == 1
    assert settings.CELERY_BEAT_SCHEDULE["verify-sample"]["task"] == "modelgate.verify_sample"


def test_rotated_keys_serve_every_file_after_a_restart_with_only_the_new_key(
    alice, transactional_db, tmp_path, settings
):
    root = tmp_path / "store"
    old, new = new_key(), new_key()
    settings.MODELGATE_STORAGE_URL = f"file://{root}"
    settings.MODELGATE_ENCRYPTION_KEY, settings.MODELGATE_ENCRYPTION_OLD_KEYS = old, []
    api = client_for(alice)
    api.post("/api/v1/models/", {"name": "fraud"}, format="json")
    files = {
        1: {"model.bin": os.urandom(2 * MIB + 3), "conf/params.json": b'{"depth": 7}'},
        2: {"model.bin": os.urandom(MIB), "empty.txt": b""},
    }
    upload_version(api, "fraud", files[1])
    # Nodes restarted with the new key (the old one still unwraps) write new blobs under it,
    # the state an interrupted rotation also leaves behind.
    settings.MODELGATE_ENCRYPTION_KEY, settings.MODELGATE_ENCRYPTION_OLD_KEYS = new, [old]
    upload_version(api, "fraud", files[2])
    blobs = {p: p.read_bytes() for p in (root / "sha256").rglob("*") if p.is_file()}
    records = {p: p.read_bytes() for p in (root / "keys").rglob("*") if p.is_file()}
    assert len(blobs) == len(records) == 4

    env = store_env(MODELGATE_ENCRYPTION_KEY=new, MODELGATE_ENCRYPTION_OLD_KEYS=old)
    result = manage(env, "rotate_keys")
    assert result.returncode == 0, result.stderr
    assert "Re-wrapped 2 data key(s); 2 already under key" in result.stdout
    again = manage(env, "rotate_keys")
    assert "Re-wrapped 0 data key(s); 4 already under key" in again.stdout
    # blob bodies untouched; the records under the old key re-written, now all under the new
    assert {p: p.read_bytes() for p in blobs} == blobs
    old_id, new_id = (key_id(parse_key(k)) for k in (old, new))
    assert sorted(json.loads(before)["master"] for before in records.values()) == sorted(
        [old_id, old_id, new_id, new_id]
    )
    assert {json.loads(p.read_bytes())["master"] for p in records} == {new_id}
    assert all(p.read_bytes() != b for p, b in records.items() if old_id in b.decode())

    web = Web(store_env(MODELGATE_ENCRYPTION_KEY=new, MODELGATE_ENCRYPTION_OLD_KEYS=""), tmp_path)
    web.start()
    try:
        token = {"Authorization": f"Bearer {client_for_token(alice)}"}
        for number, version_files in files.items():
            for path, data in version_files.items():
                got = httpx.get(
                    f"{web.url}/api/v1/models/fraud/versions/{number}/files/{path}",
                    headers=token,
                    timeout=60,
                )
                assert got.status_code == 200 and got.content == data, (number, path)
    finally:
        web.stop()

    # and the old key alone no longer opens anything
    settings.MODELGATE_ENCRYPTION_KEY, settings.MODELGATE_ENCRYPTION_OLD_KEYS = old, []
    with pytest.raises(KeyUnavailable):
        get_store().open(sha256_of(files[1]["model.bin"]))


def client_for_token(user) -> str:
    from .conftest import token_for

    return token_for(user)


def test_readyz_and_the_log_warn_when_encryption_is_off(client, settings, tmp_path, caplog, db):
    settings.MODELGATE_STORAGE_URL = f"file://{tmp_path / 'plain'}"
    settings.MODELGATE_ENCRYPTION_KEY = ""
    with caplog.at_level(logging.WARNING, logger="registry.storage"):
        body = client.get("/readyz").json()
    assert body["encryption"] == "off"
    assert "Encryption at rest is OFF" in body["warnings"][0]
    assert "Encryption at rest is OFF" in caplog.text

    settings.MODELGATE_ENCRYPTION_KEY = new_key()
    body = client.get("/readyz").json()
    assert body["encryption"] == "on" and "warnings" not in body
    assert body["status"] == "ok"


# --- the format itself, on a store object -------------------------------------------


@pytest.fixture
def sealed(tmp_path):
    objects = LocalObjects(tmp_path / "s")
    store = ContentStore(EncryptedObjects(objects, Keyring.from_texts(new_key())), encrypted=True)
    return store, tmp_path / "s"


def test_segments_cannot_be_dropped_truncated_or_appended(sealed):
    store, root = sealed
    data = os.urandom(2 * SEGMENT_SIZE)
    info = store.put(io.BytesIO(data))
    path = root / blob_name(info.sha256)
    original = path.read_bytes()
    whole = SEGMENT_SIZE + TAG_SIZE
    for altered in [
        original[: HEADER_SIZE + whole],  # the last segment dropped
        original[:-1],  # truncated inside the last segment
        original + original[HEADER_SIZE : HEADER_SIZE + whole],  # a segment appended
        original[:HEADER_SIZE] + original[HEADER_SIZE + whole :] + original[HEADER_SIZE:][:whole],
    ]:
        path.write_bytes(altered)
        with pytest.raises(BlobCorrupt):
            b"".join(store.iter_bytes(info.sha256))
    path.write_bytes(original)
    assert b"".join(store.iter_bytes(info.sha256)) == data


def test_a_key_record_moved_to_another_blob_does_not_unwrap(sealed):
    store, root = sealed
    first, second = store.put(io.BytesIO(b"a" * 100)), store.put(io.BytesIO(b"b" * 100))
    # give the second blob the first one's body and key record: content swapped
    (root / blob_name(second.sha256)).write_bytes((root / blob_name(first.sha256)).read_bytes())
    for record in (root / "keys" / blob_name(first.sha256)).iterdir():
        target = root / "keys" / blob_name(second.sha256) / record.name
        target.write_bytes(record.read_bytes())
    with pytest.raises(BlobCorrupt, match="data key record failed authentication"):
        store.open(second.sha256)
    assert b"".join(store.iter_bytes(first.sha256)) == b"a" * 100
