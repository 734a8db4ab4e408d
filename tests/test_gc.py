"""gc_store: removes what nothing references, never what an upload is landing on.

The race test (must-show 3 of issue 9): versions are deleted with their models, then 50
uploads re-send their files' content through a live server (chunked and one-shot) while
garbage collection runs over and over with a grace of 0. Every new version must become
ready and re-verify, and the blobs nobody re-uploaded must be gone.
"""

import hashlib
import io
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.core.management import call_command

from registry.models import ModelVersion, RegisteredModel, VersionFile
from registry.services import registered_models, store_care
from registry.storage import get_store

from .conftest import sha256_of, token_for, wait_for
from .storage_support import manage, store_env

pytest_plugins = ["tests.storage_fixtures"]  # moto, s3_env, bucket

KIB = 1024
INFLIGHT = 2.0  # seconds; the one-shot uploads here record their reference well within it


def content(seed: int, size: int = 96 * KIB) -> bytes:
    return random.Random(seed).randbytes(size)


class Api:
    def __init__(self, base: str, token: str):
        self.http = httpx.Client(
            base_url=f"{base}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=60
        )

    def create_model(self, name: str) -> None:
        response = self.http.post("/models/", json={"name": name})
        assert response.status_code == 201, response.text

    def chunked(self, model: str, files: dict[str, bytes]) -> int:
        """Declare, upload each file in two Content-Range chunks, finalize."""
        declared = [{"path": p, "size": len(d), "sha256": sha256_of(d)} for p, d in files.items()]
        response = self.http.post(f"/models/{model}/versions/", json={"files": declared})
        assert response.status_code == 201, response.text
        number = response.json()["version"]
        for path, data in files.items():
            half = len(data) // 2
            for start, end in ((0, half), (half, len(data))):
                put = self.http.put(
                    f"/models/{model}/versions/{number}/files/{path}",
                    content=data[start:end],
                    headers={
                        "Content-Range": f"bytes {start}-{end - 1}/{len(data)}",
                        "Content-Type": "application/octet-stream",
                    },
                )
                assert put.status_code == 200, put.text
        final = self.http.post(f"/models/{model}/versions/{number}/finalize/")
        assert final.status_code == 200, final.text
        return number

    def one_shot(self, model: str, files: dict[str, bytes]) -> int:
        response = self.http.post(
            f"/models/{model}/versions/",
            data={"metadata": json.dumps({})},
            files=[
                ("files", (path, data, "application/octet-stream")) for path, data in files.items()
            ],
        )
        assert response.status_code == 201, response.text
        return response.json()["version"]

    def download(self, model: str, number: int, path: str) -> bytes:
        response = self.http.get(f"/models/{model}/versions/{number}/files/{path}")
        assert response.status_code == 200, response.text
        return response.content


@pytest.fixture
def own_store(settings, tmp_path):
    settings.MODELGATE_STORAGE_URL = f"file://{tmp_path / 'store'}"
    settings.MODELGATE_GIT_DIR = tmp_path / "git"
    return get_store()


def all_ready(numbers: dict[str, list[int]]):
    def check():
        versions = [
            ModelVersion.objects.get(model__name=model, number=n)
            for model, ns in numbers.items()
            for n in ns
        ]
        failed = [
            (v.model.name, v.number, v.status_reason) for v in versions if v.state == "failed"
        ]
        assert not failed, failed
        return all(v.state == "ready" for v in versions)

    return check


def test_gc_racing_uploads_loses_no_referenced_blob(
    own_store, live_server, celery_worker, alice, admin_user
):
    api = Api(live_server.url, token_for(alice))
    # 10 old versions of 6 files each: files 0-4 will be uploaded again, file 5 never.
    old = {}
    for m in range(10):
        api.create_model(f"old-{m}")
        files = {f"f{i}.bin": content(m * 10 + i) for i in range(6)}
        old[f"old-{m}"] = (api.chunked(f"old-{m}", files), files)
    wait_for(all_ready({name: [n] for name, (n, _) in old.items()}), timeout=180)
    old_packages = set(
        ModelVersion.objects.filter(model__name__startswith="old-").values_list(
            "package_sha256", flat=True
        )
    )
    assert len(old_packages) == 10 and "" not in old_packages
    never_again = {sha256_of(files["f5.bin"]) for _, files in old.values()} | old_packages
    shared = [data for _, files in old.values() for p, data in files.items() if p != "f5.bin"]

    # While they are referenced, nothing goes however short the grace.
    time.sleep(INFLIGHT + 0.5)  # their last touch is now outside the in-flight window
    assert store_care.collect_garbage(grace=0, inflight=INFLIGHT).deleted == []
    for name in old:
        registered_models.delete_model(RegisteredModel.objects.get(name=name), admin_user)

    for m in range(5):
        api.create_model(f"new-{m}")
    stop, runs, deleted = threading.Event(), [0], []

    def collector():
        from django.db import connection

        try:
            while not stop.is_set():
                report = store_care.collect_garbage(grace=0, inflight=INFLIGHT)
                runs[0] += 1
                deleted.extend(report.deleted)
        finally:
            connection.close()

    def upload(i: int) -> tuple[str, int, dict[str, bytes]]:
        model = f"new-{i % 5}"
        # Each upload re-sends two old files' content (so 50 uploads cover all 50 twice).
        files = {"a.bin": shared[i], "b.bin": shared[(i + 25) % 50]}
        send = api.one_shot if i % 5 == 4 else api.chunked
        return model, send(model, files), files

    gc = threading.Thread(target=collector)
    gc.start()
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            uploads = list(pool.map(upload, range(50)))
    finally:
        stop.set()
        gc.join(timeout=120)
    numbers: dict[str, list[int]] = {}
    for model, number, _ in uploads:
        numbers.setdefault(model, []).append(number)
    wait_for(all_ready(numbers), timeout=300)

    # GC did run during the uploads and removed what no upload wanted.
    assert runs[0] >= 3, runs
    store_care.collect_garbage(grace=0, inflight=0)
    stored = set(own_store.digests())
    assert never_again.isdisjoint(stored), "unreferenced blobs survived"
    assert deleted, "the collector never deleted anything while racing"

    # Nothing referenced was lost: every version re-verifies, every file downloads intact.
    result = manage(store_env(), "verify_store")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 damaged, 0 missing" in result.stdout
    assert store_care.referenced_digests() <= stored
    for model, number, files in uploads:
        for path, data in files.items():
            assert api.download(model, number, path) == data
    assert ModelVersion.objects.filter(model__name__startswith="new-", state="ready").count() == 50


def test_gc_waits_for_an_upload_landing_on_a_blob(own_store, transactional_db):
    """The guard itself: a deduplicating write blocks while the collector holds a blob's
    lock; if the collector deleted the blob meanwhile, the write stores it again."""
    data = content(7)
    digest = own_store.put(io.BytesIO(data)).sha256
    landed = threading.Event()

    def dedupe():
        from django.db import connection

        own_store.put(io.BytesIO(data))
        landed.set()
        connection.close()

    with own_store.blob_lock(digest, exclusive=True):
        writer = threading.Thread(target=dedupe)
        writer.start()
        assert not landed.wait(1.0), "the write did not wait for the collector's lock"
        own_store.delete(digest)
    writer.join(timeout=30)
    assert landed.is_set()
    assert hashlib.sha256(b"".join(own_store.iter_bytes(digest))).hexdigest() == digest


def test_gc_grace_stale_uploads_and_leftovers(own_store, alice, admin_user, transactional_db):
    from registry.services import uploads, versions

    model = registered_models.create_model(alice, "scratch")
    data = content(1, 64 * KIB)
    version = versions.create_version(
        model, alice, {"files": [{"path": "m.bin", "size": len(data), "sha256": sha256_of(data)}]}
    )
    first = uploads.ByteRange(0, 1023, len(data))
    uploads.receive_file(version, alice, "m.bin", io.BytesIO(data[:1024]), 1024, first)
    orphan = own_store.put(io.BytesIO(b"nobody wants me")).sha256
    (own_store.root / "tmp" / "crashed-writer").write_bytes(b"x")

    # Declared (not yet complete) files are references; fresh things are kept.
    report = store_care.collect_garbage(grace=3600, inflight=0)
    assert (report.deleted, report.uploads_aborted, report.leftovers_removed) == ([], 0, 0)
    assert report.kept_recent == 1 and own_store.exists(orphan)
    assert report.kept_recent_bytes == len(b"nobody wants me")
    # The command says what it kept, why, and what would free it.
    out = io.StringIO()
    call_command("gc_store", "--grace", "3600", stdout=out)
    assert "Kept 1 unreferenced blob(s)" in out.getvalue()
    assert "within the last 3600 s" in out.getvalue()
    assert "python manage.py gc_store --grace 0 --inflight 0" in out.getvalue()
    call_command("gc_store", "--grace", "0", "--inflight", "0", "--dry-run", stdout=out)
    assert own_store.exists(orphan)

    registered_models.delete_model(model, admin_user)  # leaves its half-sent upload behind
    assert VersionFile.objects.count() == 0
    report = store_care.collect_garbage(grace=0, inflight=0)
    assert report.deleted == [orphan] and not own_store.exists(orphan)
    assert report.uploads_aborted == 1 and list(own_store.staged_uploads()) == []
    assert report.leftovers_removed == 1
    assert store_care.collect_garbage(grace=0, inflight=0).deleted == []


def test_gc_on_an_encrypted_s3_store(settings, bucket, alice, admin_user, transactional_db):
    """The same rules through the S3 backend with encryption: blobs, key records, touch
    marks and staged parts all go when nothing references them."""
    from .storage_support import bucket_objects, new_key

    settings.MODELGATE_STORAGE_URL = f"s3://{bucket}/mg"
    settings.MODELGATE_ENCRYPTION_KEY = new_key()
    store = get_store()
    keep, drop = content(2), content(3)
    model = registered_models.create_model(alice, "s3model")
    from registry.services import uploads, versions

    declared = [{"path": "k.bin", "size": len(keep), "sha256": sha256_of(keep)}]
    version = versions.create_version(model, alice, {"files": declared})
    uploads.receive_file(version, alice, "k.bin", io.BytesIO(keep), len(keep), None)
    other = registered_models.create_model(alice, "gone")
    declared = [{"path": "d.bin", "size": len(drop), "sha256": sha256_of(drop)}]
    gone = versions.create_version(other, alice, {"files": declared})
    half = uploads.ByteRange(0, 999, len(drop))
    uploads.receive_file(gone, alice, "d.bin", io.BytesIO(drop[:1000]), 1000, half)
    store.put(io.BytesIO(drop))  # stored, but its upload never completes
    registered_models.delete_model(other, admin_user)
    # What crashes leave behind: a key record and a touch mark without their blob, and a
    # temporary object.
    ghost = "0" * 64
    store.raw.put_bytes(f"keys/sha256/00/00/{ghost}/{'ab' * 16}", b"{}")
    store.raw.put_bytes(f"touched/00/{ghost}", b"")
    store.raw.put_bytes("tmp/crashed-writer", b"x")

    report = store_care.collect_garbage(grace=0, inflight=0)
    assert report.deleted == [sha256_of(drop)] and report.uploads_aborted == 1
    assert report.leftovers_removed == 3
    names = set(bucket_objects(bucket))
    assert not any(sha256_of(drop) in name for name in names), names
    assert not any("/parts/" in name for name in names), names
    assert b"".join(store.iter_bytes(sha256_of(keep))) == keep
