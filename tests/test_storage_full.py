"""A full disk is a 507 the client can act on, not a 500: the chunk is discarded, the
upload resumes once space is freed, /readyz and /metrics say the store is filling up."""

import os
import subprocess

import httpx
import pytest

from .conftest import declare, sha256_of
from .test_upload import put_chunk

MIB = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path, settings):
    """The blob store on a 4 MiB tmpfs of its own (mounting needs root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    settings.MODELGATE_STORAGE_URL = f"file://{mount}/store"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_chunk_that_finds_the_disk_full_is_a_507_and_the_upload_resumes(
    alice_api, admin_api, model, small_disk, settings
):
    data = os.urandom(2 * MIB)
    number = declare(alice_api, model, {"w.bin": data}).json()["version"]
    url = f"/api/v1/models/{model}/versions/{number}/files/w.bin"
    assert put_chunk(alice_api, url, data[:MIB], 0, len(data)).status_code == 200
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (2 * MIB + MIB // 2))  # leaves less than the next chunk

    response = put_chunk(alice_api, url, data[MIB:], MIB, len(data))
    assert response.status_code == 507, response.content
    error = response.json()["error"]
    assert (
        error["code"] == "insufficient_storage" and "retry once space is freed" in error["message"]
    )
    assert alice_api.head(url)["Upload-Offset"] == str(MIB)  # the chunk was not counted

    settings.MODELGATE_STORAGE_MIN_FREE_BYTES = 2 * MIB
    ready = admin_api.get("/readyz").json()
    assert ready["checks"]["storage"].startswith("degraded"), ready
    metrics = admin_api.get("/metrics").content.decode()
    assert "modelgate_storage_free_bytes" in metrics

    filler.unlink()  # the operator frees space; the client retries the same chunk
    response = put_chunk(alice_api, url, data[MIB:], MIB, len(data))
    assert response.status_code == 200 and response.json()["complete"], response.content
    digest = sha256_of(data)
    stored = small_disk / "store" / "sha256" / digest[:2] / digest[2:4] / digest
    assert stored.read_bytes() == data
    assert admin_api.get("/readyz").json()["checks"]["storage"] == "ok"


def test_a_package_that_finds_the_disk_full_waits_for_space_without_using_up_retries(
    alice_api, model, small_disk, monkeypatch
):
    from datetime import timedelta

    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.utils import timezone

    from registry.models import Job, ModelVersion
    from registry.services import jobs

    monkeypatch.setattr(jobs, "publish", lambda *a, **k: True)
    created = alice_api.post(
        f"/api/v1/models/{model}/versions/",
        {"metadata": "{}", "files": [SimpleUploadedFile("w.bin", os.urandom(MIB))]},
    )
    assert created.status_code == 201, created.content
    version = ModelVersion.objects.get(model__name=model, number=created.json()["version"])
    Job.objects.update_or_create(kind="process_version", ref_id=version.pk)
    filler = small_disk / "filler"
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler.write_bytes(b"\0" * (free - 64 * 1024))  # no room for the package

    now = timezone.now()
    for attempt in range(3):  # however often it is tried, no attempt is used up
        jobs.run("process_version", version.pk, now=now)
        job = Job.objects.get(kind="process_version", ref_id=version.pk)
        assert job.state == Job.State.QUEUED and job.attempts == 0, (attempt, job.last_error)
        assert job.not_before >= now + timedelta(seconds=299)
        version.refresh_from_db()
        assert version.state == "processing"
        assert version.status_reason.startswith("Waiting for disk space")
        now = job.not_before

    filler.unlink()
    jobs.run("process_version", version.pk, now=now)
    version.refresh_from_db()
    assert version.state == "ready" and version.status_reason == ""
    assert version.package_state == "ready"


@pytest.mark.live
def test_after_a_507_the_same_connection_carries_the_clients_next_request(
    stack, alice, model, small_disk
):
    """gunicorn drops a connection with more than 64 KiB of body unread, without telling
    the client: the HEAD that resumes the upload would fail on it."""
    import http.client
    import json

    from .conftest import token_for

    web = stack.web(stack.redis().url)
    headers = {"Authorization": f"Bearer {token_for(alice)}"}
    data = os.urandom(8 * MIB)  # most of it still unread when the disk fills
    files = [{"path": "w.bin", "size": len(data), "sha256": sha256_of(data)}]
    created = httpx.post(
        f"{web.url}/api/v1/models/{model}/versions/", json={"files": files}, headers=headers
    )
    assert created.status_code == 201, created.text
    url = f"/api/v1/models/{model}/versions/{created.json()['version']}/files/w.bin"
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    (small_disk / "filler").write_bytes(b"\0" * (free - MIB))

    conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=30)
    put_headers = {**headers, "Content-Type": "application/octet-stream"}
    conn.request("PUT", url, body=data, headers=put_headers)
    response = conn.getresponse()
    assert response.status == 507, response.read()
    assert json.loads(response.read())["error"]["code"] == "insufficient_storage"
    conn.request("HEAD", url, headers=headers)  # the same socket: http.client does not reopen
    response = conn.getresponse()
    response.read()
    assert response.status == 200 and response.headers["Upload-Offset"] == "0"
    conn.close()
