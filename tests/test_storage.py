"""The content-addressed blob store, through its interface only."""

import io
import os

import pytest

from registry.errors import ChecksumMismatch, IncompleteBody, TooLarge
from registry.storage import new_upload_id
from registry.storage.local import LocalBlobStore

from .conftest import sha256_of


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
