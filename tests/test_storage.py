"""The content-addressed blob store, through its interface only."""

import io
import os

import pytest

from registry.errors import ChecksumMismatch, IncompleteBody, TooLarge
from registry.storage import new_upload_id
from registry.storage.local import LocalBlobStore

from .conftest import sha256_of
from .storage_support import new_key, s3_client

pytest_plugins = ["tests.storage_fixtures"]  # moto, s3_env, bucket fixtures


@pytest.fixture
def store(tmp_path):
    return LocalBlobStore(tmp_path / "store")


def all_files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_identical_content_is_stored_once(store, tmp_path):
    first = store.put(io.BytesIO(b"same bytes"))
    second = store.put(io.BytesIO(b"same bytes"))
    assert first == second
    assert first.sha256 == sha256_of(b"same bytes")
    assert list(store.digests()) == [first.sha256]
    assert all_files(tmp_path / "store" / "tmp") == []


def test_a_blob_lives_under_its_sha256(store, tmp_path):
    info = store.put(io.BytesIO(b"abc"))
    digest = info.sha256
    assert (
        tmp_path / "store" / "sha256" / digest[:2] / digest[2:4] / digest
    ).read_bytes() == b"abc"


def test_a_checksum_mismatch_keeps_nothing(store, tmp_path):
    with pytest.raises(ChecksumMismatch):
        store.put(io.BytesIO(b"abc"), expected_sha256="0" * 64)
    assert list(store.digests()) == []
    assert all_files(tmp_path / "store" / "tmp") == []


def test_a_writer_over_its_limit_keeps_nothing(store, tmp_path):
    with pytest.raises(TooLarge):
        store.put(io.BytesIO(b"x" * 100), max_size=10)
    assert all_files(tmp_path / "store") == []


def test_ranged_reads_return_exactly_the_range(store):
    data = os.urandom(3 * 1024 * 1024 + 5)
    info = store.put(io.BytesIO(data))
    assert b"".join(store.iter_bytes(info.sha256, 1000, 2_000_000)) == data[1000:2_001_000]
    assert b"".join(store.iter_bytes(info.sha256)) == data
    assert store.size(info.sha256) == len(data)


def test_digests_are_checked_before_any_path_is_built(store):
    for bad in ["../../etc/passwd", "A" * 64, "0" * 63, ""]:
        with pytest.raises(ValueError):
            store.exists(bad)
    with pytest.raises(ValueError):
        store.write_part("../x", 0, io.BytesIO(b""), 0)


def test_staged_upload_in_parts_becomes_one_blob(store):
    data = os.urandom(5000)
    upload = new_upload_id()
    store.write_part(upload, 0, io.BytesIO(data[:2000]), 2000)
    store.write_part(upload, 2000, io.BytesIO(data[2000:]), 3000)
    info = store.finish_upload(upload, 5000, sha256_of(data))
    assert b"".join(store.iter_bytes(info.sha256)) == data


def test_staged_upload_hashes_parts_written_by_another_process(tmp_path):
    # Two store objects stand for two web nodes sharing the disk: neither has the whole hash.
    data = os.urandom(4096)
    node_a, node_b = LocalBlobStore(tmp_path / "s"), LocalBlobStore(tmp_path / "s")
    upload = new_upload_id()
    node_a.write_part(upload, 0, io.BytesIO(data[:1000]), 1000)
    node_b.write_part(upload, 1000, io.BytesIO(data[1000:3000]), 2000)
    node_a.write_part(upload, 3000, io.BytesIO(data[3000:]), 1096)
    assert node_a.finish_upload(upload, 4096, sha256_of(data)).sha256 == sha256_of(data)


def test_staged_upload_with_wrong_bytes_is_discarded(store, tmp_path):
    upload = new_upload_id()
    store.write_part(upload, 0, io.BytesIO(b"wrong"), 5)
    with pytest.raises(ChecksumMismatch):
        store.finish_upload(upload, 5, sha256_of(b"right"))
    assert list(store.digests()) == []
    assert all_files(tmp_path / "store" / "uploads") == []


def test_a_short_body_is_reported_not_stored(store):
    upload = new_upload_id()
    with pytest.raises(IncompleteBody):
        store.write_part(upload, 0, io.BytesIO(b"abc"), 10)
    assert list(store.digests()) == []


# --- every backend behind the same interface ------------------------------------------
# The plain local store above, the local store encrypted, and an S3 bucket (moto, a real
# server process) plain and encrypted: two store objects stand for two nodes.

BACKENDS = ["local", "local-encrypted", "s3", "s3-encrypted"]


@pytest.fixture(params=BACKENDS)
def nodes(request, tmp_path):
    from registry.storage.encrypted import EncryptedObjects
    from registry.storage.keys import Keyring
    from registry.storage.local import LocalObjects
    from registry.storage.objects import ContentStore
    from registry.storage.s3 import S3Objects

    key = Keyring.from_texts(new_key())

    def node():
        if request.param == "local":
            return LocalBlobStore(tmp_path / "store")
        if request.param.startswith("s3"):
            objects = S3Objects(request.getfixturevalue("bucket"), "store", s3_client())
        else:
            objects = LocalObjects(tmp_path / "store")
        if request.param.endswith("encrypted"):
            return ContentStore(EncryptedObjects(objects, key), encrypted=True)
        return ContentStore(objects)

    return node(), node()


SEG = 1024 * 1024  # the encrypted layout's segment size: edges worth testing


@pytest.mark.parametrize("size", [0, 1, SEG - 1, SEG, SEG + 1, 2 * SEG + 17])
def test_every_backend_reads_back_what_it_stored_by_range(nodes, size):
    store, other = nodes
    data = os.urandom(size)
    info = store.put(io.BytesIO(data))
    assert info.sha256 == sha256_of(data) and info.size == size
    assert other.exists(info.sha256) and other.size(info.sha256) == size
    assert b"".join(other.iter_bytes(info.sha256)) == data
    for offset, length in [(0, 1), (SEG - 2, 5), (SEG, SEG), (size // 2, None), (size, 3)]:
        end = None if length is None else offset + length
        assert b"".join(other.iter_bytes(info.sha256, offset, length)) == data[offset:end]
    assert list(other.digests()) == [info.sha256]


def test_every_backend_stores_identical_content_once_and_keeps_nothing_rejected(nodes):
    store, _ = nodes
    first, second = store.put(io.BytesIO(b"same")), store.put(io.BytesIO(b"same"))
    assert first == second and list(store.digests()) == [first.sha256]
    with pytest.raises(ChecksumMismatch):
        store.put(io.BytesIO(b"other"), expected_sha256="0" * 64)
    with pytest.raises(TooLarge):
        store.put(io.BytesIO(b"x" * 100), max_size=10)
    assert list(store.digests()) == [first.sha256]
    store.delete(first.sha256)
    assert not store.exists(first.sha256) and list(store.digests()) == []


def test_every_backend_finishes_an_upload_whose_parts_reached_different_nodes(nodes):
    node_a, node_b = nodes
    data = os.urandom(3 * SEG + 1234)
    upload, position = new_upload_id(), 0
    for index, length in enumerate([1000, SEG + 5, 7, 2 * SEG + 222]):
        node = node_a if index % 2 == 0 else node_b
        node.write_part(upload, position, io.BytesIO(data[position : position + length]), length)
        position += length
    assert position == len(data)
    info = node_b.finish_upload(upload, len(data), sha256_of(data))
    assert b"".join(node_a.iter_bytes(info.sha256)) == data
    assert list(node_a.digests()) == [info.sha256]


def test_every_backend_discards_a_staged_upload_with_wrong_bytes(nodes):
    store, other = nodes
    upload = new_upload_id()
    store.write_part(upload, 0, io.BytesIO(b"wrong"), 5)
    with pytest.raises(ChecksumMismatch):
        other.finish_upload(upload, 5, sha256_of(b"right"))
    assert list(store.digests()) == []
    # the parts are gone: finishing the same id again finds nothing left behind
    with pytest.raises(ChecksumMismatch):
        other.finish_upload(upload, 5, sha256_of(b"wrong"))


def test_every_backend_replaces_a_part_whose_commit_was_lost(nodes):
    # A part was stored but the database never recorded it: the client sends that range
    # again, in other sizes, and the leftover must not end up in the file.
    store, other = nodes
    data = os.urandom(3000)
    upload = new_upload_id()
    store.write_part(upload, 0, io.BytesIO(data[:1000]), 1000)
    store.write_part(upload, 1000, io.BytesIO(b"x" * 1500), 1500)  # lost commit
    other.write_part(upload, 1000, io.BytesIO(data[1000:1200]), 200)
    other.write_part(upload, 1200, io.BytesIO(data[1200:]), 1800)
    info = store.finish_upload(upload, 3000, sha256_of(data))
    assert b"".join(other.iter_bytes(info.sha256)) == data


def test_every_backend_reports_a_short_body_and_keeps_no_part(nodes):
    store, _ = nodes
    upload = new_upload_id()
    with pytest.raises(IncompleteBody):
        store.write_part(upload, 0, io.BytesIO(b"abc"), 10)
    store.write_part(upload, 0, io.BytesIO(b"abcdefghij"), 10)
    assert store.finish_upload(upload, 10, sha256_of(b"abcdefghij")).size == 10
