"""Chunked uploads: Content-Range, resume with HEAD, verification, nothing partial kept."""

import contextlib
import os

import httpx

from registry.models import Event, VersionFile

from .conftest import declare, sha256_of, token_for


def put_chunk(client, url, data, start, total):
    end = start + len(data) - 1
    return client.put(
        url,
        data,
        content_type="application/octet-stream",
        HTTP_CONTENT_RANGE=f"bytes {start}-{end}/{total}",
    )


def test_a_file_sent_in_chunks_completes_and_is_verified(alice_api, model, store_root):
    data = os.urandom(300_000)
    number = declare(alice_api, model, {"w.bin": data}).json()["version"]
    url = f"/api/v1/models/{model}/versions/{number}/files/w.bin"
    for start in range(0, len(data), 100_000):
        response = put_chunk(alice_api, url, data[start : start + 100_000], start, len(data))
        assert response.status_code == 200
        assert response.json()["received"] == start + 100_000
    assert response.json()["complete"] is True
    digest = sha256_of(data)
    assert (store_root / "sha256" / digest[:2] / digest[2:4] / digest).read_bytes() == data


def test_head_reports_the_offset_to_resume_from(alice_api, model):
    data = os.urandom(50_000)
    number = declare(alice_api, model, {"w.bin": data}).json()["version"]
    url = f"/api/v1/models/{model}/versions/{number}/files/w.bin"
    put_chunk(alice_api, url, data[:20_000], 0, len(data))
    head = alice_api.head(url)
    assert head.status_code == 200
    assert (head["Upload-Offset"], head["Upload-Length"]) == ("20000", "50000")
    assert head["Upload-Complete"] == "false"
    assert put_chunk(alice_api, url, data[20_000:], 20_000, len(data)).json()["complete"]
    assert alice_api.head(url)["Upload-Complete"] == "true"


def test_a_chunk_at_the_wrong_offset_is_a_conflict_that_names_the_offset(alice_api, model):
    data = os.urandom(30_000)
    number = declare(alice_api, model, {"w.bin": data}).json()["version"]
    url = f"/api/v1/models/{model}/versions/{number}/files/w.bin"
    put_chunk(alice_api, url, data[:10_000], 0, len(data))
    for start in (0, 15_000):  # a repeated chunk, and a gap
        response = put_chunk(alice_api, url, data[start : start + 5_000], start, len(data))
        assert response.status_code == 409
        assert response.json()["error"]["details"]["received"] == 10_000
        assert response["Upload-Offset"] == "10000"


def test_a_checksum_mismatch_is_400_and_keeps_nothing(alice_api, model, store_root):
    good = os.urandom(10_000)
    number = declare(alice_api, model, {"w.bin": good}).json()["version"]
    url = f"/api/v1/models/{model}/versions/{number}/files/w.bin"
    bad = bytes(reversed(good))
    put_chunk(alice_api, url, bad[:5_000], 0, len(bad))
    staged = store_root / "uploads" / VersionFile.objects.get().upload_id
    assert staged.exists()
    response = put_chunk(alice_api, url, bad[5_000:], 5_000, len(bad))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "checksum_mismatch"
    vfile = VersionFile.objects.get()
    assert (vfile.received, vfile.complete) == (0, False)
    assert not list((store_root / "sha256").rglob(sha256_of(bad)))
    assert not staged.exists()
    assert Event.objects.filter(type="file.rejected").exists()
    # The right bytes are accepted afterwards, from the start.
    assert alice_api.put(url, good, content_type="application/octet-stream").status_code == 200


def test_malformed_ranges_and_lengths_are_refused(alice_api, model):
    data = b"x" * 100
    number = declare(alice_api, model, {"w.bin": data}).json()["version"]
    url = f"/api/v1/models/{model}/versions/{number}/files/w.bin"
    for header in ["bytes 0-9/99", "bytes 9-0/100", "bytes 0-100/100", "items 0-9/100", "bytes x"]:
        response = alice_api.put(
            url, data[:10], content_type="application/octet-stream", HTTP_CONTENT_RANGE=header
        )
        assert response.status_code == 400, header
    response = alice_api.put(url, data[:50], content_type="application/octet-stream")
    assert response.status_code == 400  # a whole-file PUT of the wrong size
    assert VersionFile.objects.get().received == 0


def test_an_undeclared_file_is_404(alice_api, model):
    number = declare(alice_api, model, {"w.bin": b"x"}).json()["version"]
    response = alice_api.put(
        f"/api/v1/models/{model}/versions/{number}/files/other.bin",
        b"x",
        content_type="application/octet-stream",
    )
    assert response.status_code == 404


def test_a_dropped_connection_mid_chunk_is_resumed_over_real_http(
    alice, model, live_server, transactional_db
):
    data = os.urandom(2_000_000)
    token = token_for(alice)
    headers = {"Authorization": f"Bearer {token}"}
    created = httpx.post(
        f"{live_server.url}/api/v1/models/{model}/versions/",
        headers=headers,
        json={"files": [{"path": "w.bin", "size": len(data), "sha256": sha256_of(data)}]},
    )
    url = created.json()["uploads"][0]["url"]

    def half_then_hang_up():
        yield data[:500_000]
        raise ConnectionResetError("network dropped")

    with contextlib.suppress(httpx.HTTPError, ConnectionResetError):
        httpx.put(
            url,
            content=half_then_hang_up(),
            headers={
                **headers,
                "Content-Length": "1000000",
                "Content-Range": f"bytes 0-999999/{len(data)}",
            },
        )
    offset = int(httpx.head(url, headers=headers).headers["Upload-Offset"])
    assert offset == 0  # the broken chunk was not counted
    for start in range(offset, len(data), 1_000_000):
        chunk = data[start : start + 1_000_000]
        response = httpx.put(
            url,
            content=chunk,
            headers={
                **headers,
                "Content-Range": f"bytes {start}-{start + len(chunk) - 1}/{len(data)}",
            },
        )
        assert response.status_code == 200, response.text
    assert response.json()["complete"] is True
    assert httpx.get(url, headers=headers).content == data
