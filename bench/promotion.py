"""Promotion latency: from a reviewer's approval to the version being `promoted`.

A real worker does the promotion (gates re-checked, alias moved under the environment's
row lock, events, Git sync queued). Versions are tiny, so the time is the registry's own
path: the approval request, the job's trip through Redis, the worker's transaction, and
the client seeing the new state (polled every 5 ms).
"""

import json
import statistics
import time

import httpx

from .core import BenchError, Context, Row
from .server import create_token_for, manage, server_env

NAME = "promotion-latency"
COUNT = 25

SETUP = """
from django.contrib.auth.models import Group, User
from registry.models import Environment
reviewer = User.objects.create_user("bench-reviewer", password={password!r})
reviewer.groups.add(Group.objects.get(name="reviewers"))
Environment.objects.get_or_create(name="production", defaults={{"required_approvals": 1,
    "reviewer_group": "reviewers", "gates": [{{"type": "scan_clean"}}]}})
"""


def _wait(client: httpx.Client, url: str, done, timeout: float = 60.0, pause: float = 0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(url).json()
        if done(body):
            return body
        time.sleep(pause)
    raise BenchError(f"timed out waiting on {url}")


def run(ctx: Context) -> list[Row]:
    server = ctx.server
    password = "bench-reviewer-" + str(time.time_ns())
    manage(server_env(server.root), "shell", "-c", SETUP.format(password=password))
    reviewer_token = create_token_for(server.base_url, "bench-reviewer", password)
    author = server.client()
    reviewer = server.client()
    reviewer.headers["Authorization"] = f"Bearer {reviewer_token}"
    author.post("/api/v1/models/", json={"name": "bench-promotions"}).raise_for_status()

    numbers = []
    for index in range(COUNT):
        response = author.post(
            "/api/v1/models/bench-promotions/versions/",
            data={"metadata": json.dumps({"metrics": {"accuracy": 0.9}})},
            files=[("files", ("model.txt", f"weights {index}".encode(), "text/plain"))],
        )
        response.raise_for_status()
        numbers.append(response.json()["version"])
    for number in numbers:
        _wait(
            author,
            f"/api/v1/models/bench-promotions/versions/{number}/",
            lambda v: v["state"] in ("ready", "failed"),
        )

    latencies = []
    for number in numbers:
        promotion = author.post(
            f"/api/v1/models/bench-promotions/versions/{number}/promotions/",
            json={"environment": "production"},
        ).json()
        if promotion.get("state") != "pending":
            raise BenchError(f"promotion of version {number} is {promotion}")
        started = time.perf_counter()
        reviewer.post(
            f"/api/v1/promotions/{promotion['id']}/reviews/",
            json={"decision": "approve", "comment": "bench"},
        ).raise_for_status()
        _wait(
            author,
            f"/api/v1/promotions/{promotion['id']}/",
            lambda p: p["state"] in ("promoted", "blocked", "failed"),
        )
        latencies.append(time.perf_counter() - started)

    quantiles = statistics.quantiles(latencies, n=100)
    p50, p95 = statistics.median(latencies), quantiles[94]
    return [
        Row(
            NAME,
            "promotion: approval → promoted",
            seconds=p50,
            note=f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
            f"max {max(latencies) * 1000:.0f} ms over {COUNT} promotions, 1 worker",
            details={"latencies_s": latencies, "p50_s": p50, "p95_s": p95},
        )
    ]
