"""The store's fast paths (issue 9) keep its guarantees: against a real S3 server (moto).

- a put whose digest is declared streams straight under the blob's name, never a temp key;
- finishing a staged upload copies its parts server-side, and only once all were hashed
  (the copies are pinned to the hashed bytes' ETags too, which moto does not enforce);
- the encrypting writer seals caller buffers without keeping (and so sharing) them.
"""

import io
import os

import pytest

from registry.errors import ChecksumMismatch
from registry.storage import new_upload_id
from registry.storage.encrypted import SEGMENT_SIZE, EncryptedObjects
from registry.storage.keys import Keyring
from registry.storage.local import LocalObjects
from registry.storage.objects import ContentStore, blob_name
from registry.storage.s3 import MIN_PART_SIZE, PART_SIZE, S3Objects

from .conftest import sha256_of
from .storage_support import bucket_objects, s3_client

pytest_plugins = ["tests.storage_fixtures"]  # moto, s3_env, bucket fixtures


def open_multipart_uploads(bucket: str) -> list[str]:
    return [u["Key"] for u in s3_client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


class Watched(io.BytesIO):
    """A stream that, once half read, records what the bucket shows meanwhile."""

    def __init__(self, data: bytes, bucket: str):
        super().__init__(data)
        self.bucket, self.half, self.seen = bucket, len(data) // 2, None

    def read(self, size=-1):
        if self.seen is None and self.tell() >= self.half:
            self.seen = (open_multipart_uploads(self.bucket), list(bucket_objects(self.bucket)))
        return super().read(size)


def test_a_put_with_a_declared_digest_streams_under_the_blob_name_with_no_copy(bucket):
    store = ContentStore(S3Objects(bucket, "blobs", s3_client()))
    data = os.urandom(3 * PART_SIZE + 7)
    digest = sha256_of(data)
    stream = Watched(data, bucket)
    info = store.put(stream, expected_sha256=digest)
    # Mid-way the parts go to a multipart upload of the final name, invisible until done.
    assert stream.seen == ([f"blobs/{blob_name(digest)}"], [])
    assert info.sha256 == digest and info.size == len(data)
    assert list(bucket_objects(bucket)) == [
        f"blobs/{blob_name(digest)}",
        f"blobs/touched/{digest[:2]}/{digest}",
    ]
    assert b"".join(store.iter_bytes(digest)) == data and open_multipart_uploads(bucket) == []


def test_a_put_whose_bytes_differ_from_the_declared_digest_leaves_nothing(bucket):
    store = ContentStore(S3Objects(bucket, "blobs", s3_client()))
    data = os.urandom(2 * PART_SIZE + 1)
    with pytest.raises(ChecksumMismatch):
        store.put(io.BytesIO(data), expected_sha256=sha256_of(b"other"))
    assert bucket_objects(bucket) == {} and open_multipart_uploads(bucket) == []


def test_a_malformed_declared_digest_is_a_mismatch_not_a_crash(bucket):
    store = ContentStore(S3Objects(bucket, "blobs", s3_client()))
    with pytest.raises(ChecksumMismatch):
        store.put(io.BytesIO(b"abc"), expected_sha256="../not-a-digest")
    assert bucket_objects(bucket) == {}


@pytest.mark.parametrize("chunk", [MIN_PART_SIZE, 1024 * 1024], ids=["copied", "streamed"])
def test_a_staged_upload_is_published_whole_whether_its_parts_are_copied_or_streamed(bucket, chunk):
    # Parts of 5 MiB and more are copied server-side; smaller ones are streamed through.
    store = ContentStore(S3Objects(bucket, "blobs", s3_client()))
    data = os.urandom(3 * chunk + 1234)
    upload = new_upload_id()
    for offset in range(0, len(data), chunk):
        piece = data[offset : offset + chunk]
        store.write_part(upload, offset, io.BytesIO(piece), len(piece))
    info = store.finish_upload(upload, len(data), sha256_of(data))
    assert b"".join(store.iter_bytes(info.sha256)) == data
    assert sorted(bucket_objects(bucket)) == [
        f"blobs/{blob_name(info.sha256)}",
        f"blobs/touched/{info.sha256[:2]}/{info.sha256}",
    ]
    assert open_multipart_uploads(bucket) == []


def test_publishing_before_every_part_was_read_is_refused(bucket):
    objects = S3Objects(bucket, "blobs", s3_client())
    objects.put_bytes("parts/a", os.urandom(MIN_PART_SIZE))
    objects.put_bytes("parts/b", b"tail")
    composer = objects.composer("sha256/x", [("parts/a", MIN_PART_SIZE), ("parts/b", 4)])
    with composer.read_source(0) as stream:
        stream.read()
    with pytest.raises(RuntimeError):
        composer.publish("sha256/x")
    composer.abort()
    assert not objects.exists("sha256/x") and open_multipart_uploads(bucket) == []


def test_the_encrypting_writer_does_not_keep_a_buffer_the_caller_reuses(tmp_path):
    store = ContentStore(
        EncryptedObjects(LocalObjects(tmp_path), Keyring(os.urandom(32))), encrypted=True
    )
    original = os.urandom(2 * SEGMENT_SIZE + 10)
    writer = store.writer()
    buffer = bytearray(SEGMENT_SIZE)
    for offset in range(0, len(original), SEGMENT_SIZE):
        piece = original[offset : offset + SEGMENT_SIZE]
        buffer[: len(piece)] = piece
        writer.write(bytes(buffer[: len(piece)]) if offset else buffer)  # both kinds
        buffer[:] = b"\0" * SEGMENT_SIZE  # the caller reuses its buffer at once
    info = writer.commit()
    assert info.sha256 == sha256_of(original)
    assert b"".join(store.iter_bytes(info.sha256)) == original
