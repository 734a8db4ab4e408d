"""A 1-minute soak: mixed load from several processes while the worker is killed twice.

The same code as `make soak` (bench/soak.py), on the test database with real redis,
gunicorn and Celery processes (tests/processes.py); afterwards every invariant is checked
through the ORM and the blob store.
"""

import os

import pytest

from bench.soak import ENVIRONMENT, Soak, check_invariants, drain, summary

from .conftest import token_for

SECONDS = float(os.environ.get("MODELGATE_SOAK_SECONDS", 60))


@pytest.mark.live
@pytest.mark.timeout(600)
def test_mixed_load_survives_two_worker_kills_with_every_invariant_holding(stack, alice, bob):
    from registry.models import Environment, ModelVersion, Promotion

    Environment.objects.create(
        name=ENVIRONMENT, required_approvals=1, reviewer_group="reviewers", gates=[]
    )
    redis = stack.redis()
    web = stack.web(redis.url)
    workers = [stack.worker(redis.url, "w1")]

    def kill_worker():
        workers[-1].kill()

    def start_worker():
        workers.append(stack.worker(redis.url, f"w{len(workers) + 1}"))

    soak = Soak(web.url, token_for(alice), token_for(bob), kill_worker, start_worker, SECONDS, 3)
    results = soak.run()
    drain([r["model"] for r in results])
    totals = summary(results)

    assert check_invariants(results) == [], totals
    # The load really did all of it, and work was caught mid-flight by the kills.
    assert len(soak.worker_restarts) == 2
    ops = totals["operations"]
    assert ops.get("upload", 0) >= 10 and ops.get("read", 0) >= 10, totals
    assert totals["alias_moves"] >= 1 and ops.get("promotion", 0) >= 1, totals
    assert ModelVersion.objects.filter(state="ready").count() >= 10
    assert Promotion.objects.filter(state="promoted").exists(), totals
