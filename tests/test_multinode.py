"""Must-show 1 of issue 9: nodes that share nothing but Postgres, Redis and a bucket.

Two gunicorn web nodes (own ports, own working and var directories) and two Celery
workers run against the test database, a Redis of their own and a moto S3 server started
here, with encryption on. A 200 MiB file goes up in 8 MiB chunks sent alternately to both
nodes, with a broken chunk resumed on the other node; it is finalized on one node, becomes
ready, is promoted through one node and resolved and downloaded from the other.
"""

import hashlib
import random
import time

import httpx
import pytest

from registry.models import Environment

from .api_flows import promote_and_wait
from .conftest import token_for
from .processes import ROOT, Redis, Web, Worker, base_env, wait_until
from .storage_support import bucket_objects, new_key

pytest_plugins = ["tests.storage_fixtures"]  # moto, s3_env, bucket fixtures

MIB = 1024 * 1024
CHUNK = 8 * MIB
SIZE = 200 * MIB + 12345  # not a whole number of chunks or segments


def chunk(index: int) -> bytes:
    """The file, regenerated chunk by chunk so that it is never held whole in memory."""
    length = min(CHUNK, SIZE - index * CHUNK)
    return random.Random(index).randbytes(length)


def file_slice(start: int, end: int) -> bytes:
    first, last = start // CHUNK, (end - 1) // CHUNK
    data = b"".join(chunk(i) for i in range(first, last + 1))
    return data[start - first * CHUNK : end - first * CHUNK]


@pytest.fixture
def cluster(tmp_path, settings, bucket, transactional_db):
    """Two web nodes and two workers, each in a directory of its own, stopped at the end."""
    settings.MODELGATE_GIT_DIR = tmp_path / "git"
    settings.MODELGATE_STORAGE_URL = f"s3://{bucket}/modelgate"
    settings.MODELGATE_ENCRYPTION_KEY = new_key()
    started = []
    try:
        redis = Redis(tmp_path).start()
        started.append(redis)

        def env(node: str) -> dict[str, str]:
            home = tmp_path / node
            home.mkdir()
            return base_env(
                redis.url,
                MODELGATE_ENCRYPTION_KEY=settings.MODELGATE_ENCRYPTION_KEY,
                MODELGATE_VAR_DIR=str(home / "var"),
                PYTHONPATH=str(ROOT),
            )

        nodes = []
        for name in ("node-a", "node-b"):
            web = Web(env(name), tmp_path, cwd=tmp_path / name)
            started.append(web.start())
            nodes.append(web)
        for name in ("worker-1", "worker-2"):
            worker = Worker(env(name), tmp_path, name, beat=name == "worker-1", cwd=tmp_path / name)
            started.append(worker.start())
        yield nodes
    finally:
        for process in reversed(started):
            process.stop()


def half_then_drop(data: bytes):
    yield data[: len(data) // 2]
    raise ConnectionAbortedError("network gone")


def put(client: httpx.Client, node: Web, token: str, url: str, index: int, body=None):
    data = chunk(index)
    start = index * CHUNK
    return client.put(
        f"{node.url}{url}",
        content=body if body is not None else data,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Range": f"bytes {start}-{start + len(data) - 1}/{SIZE}",
            "Content-Length": str(len(data)),
            "Content-Type": "application/octet-stream",
        },
    )


def test_a_200mb_upload_across_two_nodes_is_promoted_and_served_by_the_other(
    cluster, bucket, tmp_path, alice, bob
):
    node_a, node_b = cluster
    Environment.objects.create(
        name="production",
        required_approvals=1,
        reviewer_group="reviewers",
        gates=[{"type": "scan_clean"}, {"type": "package_ready"}],
    )
    alice_token, bob_token = token_for(alice), token_for(bob)
    auth = {"Authorization": f"Bearer {alice_token}"}
    count = -(-SIZE // CHUNK)
    digest = hashlib.sha256()
    for index in range(count):
        digest.update(chunk(index))
    sha256 = digest.hexdigest()

    with httpx.Client(timeout=600) as client:
        assert client.post(f"{node_a.url}/api/v1/models/", json={"name": "big"}, headers=auth)
        declared = client.post(
            f"{node_b.url}/api/v1/models/big/versions/",
            json={"files": [{"path": "model.bin", "size": SIZE, "sha256": sha256}]},
            headers=auth,
        )
        assert declared.status_code == 201, declared.text
        url = "/api/v1/models/big/versions/1/files/model.bin"

        broken = count // 2
        timings = {"upload": time.monotonic()}
        for index in range(count):
            node = (node_a, node_b)[index % 2]
            if index == broken:
                # the connection drops halfway through this chunk: nothing of it is kept
                with pytest.raises(ConnectionAbortedError):
                    put(client, node, alice_token, url, index, body=half_then_drop(chunk(index)))
                # the other node knows where to resume and takes the chunk
                head = client.head(f"{(node_b, node_a)[index % 2].url}{url}", headers=auth)
                assert int(head.headers["Upload-Offset"]) == index * CHUNK
                node = (node_b, node_a)[index % 2]
            response = put(client, node, alice_token, url, index)
            assert response.status_code == 200, (index, response.text)

        # the staged parts in the bucket are ciphertext (sampled here: 4 KiB probes from a
        # few chunks; test_encryption checks every run on smaller files)
        probes = [chunk(i)[at : at + 4096] for i in (0, broken, count - 1) for at in (0, 5 * MIB)]
        for name, stored in bucket_objects(bucket).items():
            assert not any(probe in stored for probe in probes if probe), name

        timings["upload"] = time.monotonic() - timings["upload"]
        timings["ready"] = time.monotonic()
        final = client.post(f"{node_a.url}/api/v1/models/big/versions/1/finalize/", headers=auth)
        assert final.status_code == 200, final.text

        def state():
            body = client.get(f"{node_b.url}/api/v1/models/big/versions/1/", headers=auth).json()
            return body["state"] if body["state"] in ("ready", "failed") else None

        assert wait_until(state, 600, "version 1 to be processed") == "ready"
        timings["ready"] = time.monotonic() - timings["ready"]

        reviewer = {"Authorization": f"Bearer {bob_token}"}
        state = promote_and_wait(
            client, node_a.url, "big/1", "production", auth, reviewer, node_b.url
        )
        assert state == "promoted"

        resolved = client.get(f"{node_b.url}/api/v1/models/big/versions/@production/", headers=auth)
        assert resolved.json()["version"] == 1
        download, received = hashlib.sha256(), 0
        timings["download"] = time.monotonic()
        with client.stream(
            "GET",
            f"{node_b.url}/api/v1/models/big/versions/@production/files/model.bin",
            headers=auth,
        ) as response:
            assert response.status_code == 200
            assert response.headers["ETag"] == f'"{sha256}"'
            for data in response.iter_bytes(MIB):
                download.update(data)
                received += len(data)
        assert received == SIZE and download.hexdigest() == sha256
        timings["download"] = time.monotonic() - timings["download"]
        print({step: f"{seconds:.1f}s" for step, seconds in timings.items()})  # shown with -s
        start, end = 37 * MIB - 5, 41 * MIB + 7  # across chunk and segment edges
        ranged = client.get(
            f"{node_b.url}{url}", headers={**auth, "Range": f"bytes={start}-{end - 1}"}
        )
        assert ranged.status_code == 206 and ranged.content == file_slice(start, end)

    # no node's disk took the file's bytes: everything lives in the bucket
    for node in ("node-a", "node-b", "worker-1", "worker-2"):
        big = [p for p in (tmp_path / node).rglob("*") if p.is_file() and p.stat().st_size > MIB]
        assert big == [], node
