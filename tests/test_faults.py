"""Faults: a worker killed mid-task, the broker down at commit, racing promotions.

Each test starts its own redis-server on a free port, its own gunicorn and worker
processes, so the machine's services stay up; the processes share the test database.
"""

import hashlib
import itertools
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from registry.models import Environment, Event, ModelVersion, Promotion

from .conftest import token_for, wait_for
from .processes import Web


def big_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    block = os.urandom(1024 * 1024)
    with open(path, "wb") as out:
        for index in range(size // len(block)):
            chunk = index.to_bytes(8, "big") + block[8:]
            out.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def client(web: Web, user) -> httpx.Client:
    return httpx.Client(
        base_url=f"{web.url}/api/v1",
        timeout=120,
        headers={"Authorization": f"Bearer {token_for(user)}"},
    )


def declare_and_upload(api: httpx.Client, model: str, path: Path, digest: str) -> int:
    size = path.stat().st_size
    created = api.post(
        f"/models/{model}/versions/",
        json={"files": [{"path": "weights.bin", "size": size, "sha256": digest}]},
    )
    assert created.status_code == 201, created.text
    number = created.json()["version"]

    def body():
        with open(path, "rb") as stream:
            while chunk := stream.read(1024 * 1024):
                yield chunk

    put = api.put(
        f"/models/{model}/versions/{number}/files/weights.bin",
        content=body(),
        headers={"Content-Length": str(size)},
    )
    assert put.status_code == 200, put.text
    return number


def version(number: int) -> ModelVersion:
    return ModelVersion.objects.get(number=number)


def test_a_worker_killed_mid_packaging_is_replaced_and_the_version_gets_one_package(
    stack, alice, tmp_path
):
    redis = stack.redis()
    web = stack.web(redis.url)
    first = stack.worker(redis.url, "first")
    api = client(web, alice)
    api.post("/models/", json={"name": "big"}).raise_for_status()
    path = tmp_path / "weights.bin"
    digest = big_file(path, 400 * 1024 * 1024)
    number = declare_and_upload(api, "big", path, digest)
    api.post(f"/models/big/versions/{number}/finalize/").raise_for_status()

    wait_for(
        lambda: version(number).pipeline.get("package") == "running", timeout=120, interval=0.02
    )
    first.kill()
    assert version(number).state == "processing"
    stack.worker(redis.url, "second")
    assert wait_for(lambda: version(number).state == "ready" and version(number), timeout=180)
    final = version(number)
    assert final.package_state == "ready" and len(final.package_sha256) == 64
    assert Event.objects.filter(type="version.ready", version_number=number).count() == 1
    package = api.get(f"/models/big/versions/{number}/package/")
    assert hashlib.sha256(package.content).hexdigest() == final.package_sha256


def test_a_broker_down_at_finalize_delays_the_work_but_loses_nothing(stack, alice, tmp_path):
    redis = stack.redis()
    web = stack.web(redis.url)
    stack.worker(redis.url)
    api = client(web, alice)
    api.post("/models/", json={"name": "patient"}).raise_for_status()
    path = tmp_path / "weights.bin"
    digest = big_file(path, 2 * 1024 * 1024)
    number = declare_and_upload(api, "patient", path, digest)

    redis.stop()
    started = time.monotonic()
    finalized = api.post(f"/models/patient/versions/{number}/finalize/")
    assert finalized.status_code == 200, finalized.text
    assert time.monotonic() - started < 20
    time.sleep(3)
    assert version(number).state == "processing"

    stack.redis(port=redis.port)  # back on the same address
    assert wait_for(lambda: version(number).state == "ready", timeout=120)
    assert Event.objects.filter(type="version.ready", version_number=number).count() == 1


def test_racing_approvals_on_one_environment_leave_one_consistent_alias(
    stack, alice, bob, carol, tmp_path, settings
):
    redis = stack.redis()
    web = stack.web(redis.url)
    stack.worker(redis.url, "w1")
    stack.worker(redis.url, "w2")
    Environment.objects.create(name="production", required_approvals=1, gates=[])
    api = client(web, alice)
    api.post("/models/", json={"name": "race"}).raise_for_status()
    numbers = []
    for index in range(20):
        data = f"model {index}".encode()
        created = api.post(
            "/models/race/versions/",
            json={
                "files": [
                    {"path": "m.bin", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                ]
            },
        ).json()
        api.put(created["uploads"][0]["url"], content=data).raise_for_status()
        api.post(f"/models/race/versions/{created['version']}/finalize/").raise_for_status()
        numbers.append(created["version"])
    wait_for(lambda: ModelVersion.objects.filter(state="ready").count() == 20, timeout=180)
    promotion_ids = [
        api.post(
            f"/models/race/versions/{n}/promotions/", json={"environment": "production"}
        ).json()["id"]
        for n in numbers
    ]
    reviewers = [client(web, bob), client(web, carol)]

    def approve(index: int) -> int:
        return (
            reviewers[index % 2]
            .post(
                f"/promotions/{promotion_ids[index]}/reviews/",
                json={"decision": "approve", "comment": "race"},
            )
            .status_code
        )

    with ThreadPoolExecutor(max_workers=20) as pool:
        assert list(pool.map(approve, range(20))) == [201] * 20
    wait_for(lambda: Promotion.objects.filter(state="promoted").count() == 20, timeout=180)

    promotions = list(Promotion.objects.order_by("sequence"))
    assert [p.sequence for p in promotions] == list(range(1, 21))
    last = promotions[-1]
    assert api.get("/models/race/versions/@production/").json()["version"] == last.version.number
    # Each promotion saw the previous one's version as the one it replaced: one chain.
    for before, after in itertools.pairwise(promotions):
        assert after.previous_version_id == before.version_id
    assert Event.objects.filter(type="promotion.promoted").count() == 20
    assert Event.objects.filter(type="alias.moved").count() == 20

    def promotion_tags():
        Path(settings.MODELGATE_GIT_DIR).mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            ["git", "-C", str(settings.MODELGATE_GIT_DIR), "tag"], capture_output=True, text=True
        ).stdout.split()
        return [t for t in out if t.startswith("race#production#")]

    tags = wait_for(lambda: len(promotion_tags()) == 20 and promotion_tags(), timeout=120)
    assert sorted(tags) == sorted(f"race#production#{n}" for n in range(1, 21))
