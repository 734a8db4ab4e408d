"""The S3-compatible backend against a real S3 server process (moto), through the API too."""

import hashlib
import io
import os

import httpx
import pytest

from registry.errors import ChecksumMismatch
from registry.storage import get_store, new_upload_id
from registry.storage.encrypted import EncryptedObjects
from registry.storage.keys import Keyring
from registry.storage.objects import ContentStore, blob_name
from registry.storage.s3 import PART_SIZE, SINGLE_PUT_LIMIT, S3Objects

from .conftest import sha256_of, upload_version
from .storage_support import bucket_objects, new_key, s3_client

pytest_plugins = ["tests.storage_fixtures"]  # moto, s3_env, bucket fixtures


def open_multipart_uploads(bucket: str) -> list[str]:
    return [u["Key"] for u in s3_client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


@pytest.fixture
def s3_store(bucket, settings):
    settings.MODELGATE_STORAGE_URL = f"s3://{bucket}/blobs"
    settings.MODELGATE_ENCRYPTION_KEY = ""
    return get_store()


def test_nothing_is_visible_under_a_name_until_published(bucket):
    objects = S3Objects(bucket, "blobs", s3_client())
    data = os.urandom(2 * PART_SIZE + 100)
    name = blob_name(sha256_of(data))
    writer = objects.writer(name)
    writer.write(data)  # two parts are already in the bucket, as a multipart upload
    assert open_multipart_uploads(bucket) == [f"blobs/{name}"]
    assert not objects.exists(name) and bucket_objects(bucket) == {}
    writer.abort()
    assert open_multipart_uploads(bucket) == [] and bucket_objects(bucket) == {}

    writer = objects.writer(name)
    writer.write(data)
    assert writer.publish(name)
    assert objects.get_bytes(name) == data and open_multipart_uploads(bucket) == []
    # a second copy of the same name is not written over the first
    again = objects.writer(name)
    again.write(b"other bytes")
    assert not again.publish(name)
    assert objects.get_bytes(name) == data


def test_a_staged_upload_with_wrong_bytes_leaves_nothing_in_the_bucket(bucket):
    store = ContentStore(S3Objects(bucket, "blobs", s3_client()))
    data = os.urandom(PART_SIZE + 5000)
    upload = new_upload_id()
    store.write_part(upload, 0, io.BytesIO(data[:PART_SIZE]), PART_SIZE)
    store.write_part(upload, PART_SIZE, io.BytesIO(data[PART_SIZE:]), 5000)
    assert any(key.startswith("blobs/parts/") for key in bucket_objects(bucket))
    with pytest.raises(ChecksumMismatch):
        store.finish_upload(upload, len(data), sha256_of(b"something else"))
    assert bucket_objects(bucket) == {} and open_multipart_uploads(bucket) == []


def test_a_blob_written_without_knowing_its_digest_is_copied_into_place(bucket):
    store = ContentStore(S3Objects(bucket, "blobs", s3_client()))
    data = os.urandom(SINGLE_PUT_LIMIT + 1)  # too large for one PUT: to a temporary key
    info = store.put(io.BytesIO(data))
    # The blob, and the empty mark of when it was last written (for gc_store).
    assert list(bucket_objects(bucket)) == [
        f"blobs/{blob_name(info.sha256)}",
        f"blobs/touched/{info.sha256[:2]}/{info.sha256}",
    ]
    assert open_multipart_uploads(bucket) == []
    assert b"".join(store.iter_bytes(info.sha256, len(data) - 11, 11)) == data[-11:]
    # read whole, botocore checks the copy's checksum as the server reports it
    assert b"".join(store.iter_bytes(info.sha256)) == data


def test_files_upload_in_chunks_and_download_by_range_from_the_bucket(
    s3_store, alice_api, model, bucket
):
    data = os.urandom(3 * 1024 * 1024 + 11)
    response = alice_api.post(
        f"/api/v1/models/{model}/versions/",
        {"files": [{"path": "m.bin", "size": len(data), "sha256": sha256_of(data)}]},
        format="json",
    )
    url = f"/api/v1/models/{model}/versions/1/files/m.bin"
    chunk = 1024 * 1024
    for start in range(0, len(data), chunk):
        end = min(start + chunk, len(data)) - 1
        put = alice_api.put(
            url,
            data[start : end + 1],
            content_type="application/octet-stream",
            HTTP_CONTENT_RANGE=f"bytes {start}-{end}/{len(data)}",
        )
        assert put.status_code == 200, put.content
    assert response.status_code == 201
    assert [k for k in bucket_objects(bucket) if "/parts/" in k] == []
    assert s3_store.exists(sha256_of(data))

    whole = alice_api.get(url)
    assert whole.status_code == 200 and b"".join(whole.streaming_content) == data
    part = alice_api.get(url, HTTP_RANGE="bytes=1000-2099999")
    assert part.status_code == 206
    assert b"".join(part.streaming_content) == data[1000:2100000]


def test_downloads_may_redirect_to_a_short_lived_presigned_url(
    s3_store, alice_api, model, settings
):
    settings.MODELGATE_STORAGE_REDIRECT = True
    data = os.urandom(100_000)
    number = upload_version(alice_api, model, {"weights/m.bin": data})
    response = alice_api.get(f"/api/v1/models/{model}/versions/{number}/files/weights/m.bin")
    assert response.status_code == 302 and response["Cache-Control"] == "no-store"
    location = response["Location"]
    assert "X-Amz-Expires=300" in location and "X-Amz-Signature=" in location
    fetched = httpx.get(location)
    assert fetched.status_code == 200 and fetched.content == data
    assert fetched.headers["content-disposition"] == 'attachment; filename="m.bin"'
    ranged = httpx.get(location, headers={"Range": "bytes=10-19"})
    assert ranged.status_code == 206 and ranged.content == data[10:20]


def test_an_encrypted_bucket_is_never_redirected_to(s3_store, alice_api, model, settings, bucket):
    settings.MODELGATE_STORAGE_REDIRECT = True
    settings.MODELGATE_ENCRYPTION_KEY = new_key()
    data = os.urandom(100_000)
    number = upload_version(alice_api, model, {"m.bin": data})
    response = alice_api.get(f"/api/v1/models/{model}/versions/{number}/files/m.bin")
    assert response.status_code == 200
    assert hashlib.sha256(b"".join(response.streaming_content)).hexdigest() == sha256_of(data)
    stored = bucket_objects(bucket)[f"blobs/{blob_name(sha256_of(data))}"]
    assert data[:4096] not in stored


def _etag(bucket: str, key: str) -> str:
    return s3_client().head_object(Bucket=bucket, Key=key)["ETag"]


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_staged_chunks_and_unnamed_blobs_up_to_the_limit_are_one_put(bucket, encrypted):
    # A multipart upload's ETag ends in "-<parts>"; one PUT's is the body's MD5.
    objects = S3Objects(bucket, "blobs", s3_client())
    if encrypted:
        objects = EncryptedObjects(objects, Keyring(os.urandom(32)))
    store = ContentStore(objects, encrypted=encrypted)
    data = os.urandom(2 * PART_SIZE + 5)  # more than a part: multipart but for the size hint
    upload = new_upload_id()
    store.write_part(upload, 0, io.BytesIO(data), len(data))
    [part] = [key for key in bucket_objects(bucket) if key.startswith("blobs/parts/")]
    assert "-" not in _etag(bucket, part)
    info = store.finish_upload(upload, len(data), sha256_of(data))
    assert b"".join(store.iter_bytes(info.sha256)) == data

    other = data[::-1]  # unknown digest, small enough: straight under its name, no copy
    info = store.put(io.BytesIO(other))
    assert "-" not in _etag(bucket, f"blobs/{blob_name(info.sha256)}")
    assert b"".join(store.iter_bytes(info.sha256)) == other
    assert not any(key.startswith("blobs/tmp/") for key in bucket_objects(bucket))
    assert open_multipart_uploads(bucket) == []


def test_a_writer_given_more_than_its_size_hint_sends_parts_and_keeps_every_byte(bucket):
    objects = S3Objects(bucket, "blobs", s3_client())
    data = os.urandom(SINGLE_PUT_LIMIT + PART_SIZE + 3)
    writer = objects.sized_writer("parts/x", 10)
    for offset in range(0, len(data), 3 * 1024 * 1024):
        writer.write(data[offset : offset + 3 * 1024 * 1024])
    assert open_multipart_uploads(bucket) == ["blobs/parts/x"]  # it fell back to parts
    assert writer.publish("parts/x", overwrite=True)
    assert objects.get_bytes("parts/x") == data and open_multipart_uploads(bucket) == []
    assert _etag(bucket, "blobs/parts/x").endswith('-6"')  # 8 MiB parts: 5 full + the rest


def test_parts_sent_under_the_blobs_name_carry_crc32_checksums_as_upload_file_does(bucket):
    """The server checks each part's CRC32 and composes the object's from them, as for
    boto3's upload_file (without, it computes a checksum over the whole object again at
    completion: moto spent more CPU on that than on receiving the parts)."""
    store = ContentStore(S3Objects(bucket, "blobs", s3_client()))
    data = os.urandom(2 * PART_SIZE + 7)
    info = store.put(io.BytesIO(data), expected_sha256=sha256_of(data))
    head = s3_client().head_object(
        Bucket=bucket, Key=f"blobs/{blob_name(info.sha256)}", ChecksumMode="ENABLED"
    )
    assert head["ChecksumCRC32"]
    assert b"".join(store.iter_bytes(info.sha256)) == data  # botocore validates it on read
