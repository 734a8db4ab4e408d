"""A delivery that keeps failing is retried for hours on Standard Webhooks' jittered
schedule, then given up; other job kinds keep their short backoff.

Time is the jobs' injected clock: each attempt runs at the instant the job became due (and
not a second before), against a real receiver that always answers 503.
"""

from datetime import timedelta

import pytest
import standardwebhooks
from celery.signals import after_task_publish
from django.utils import timezone

from registry.models import Job, WebhookDelivery
from registry.services import jobs, webhooks

from .receivers import Receiver

SCHEDULE = [5, 300, 1800, 7200, 18000, 36000, 36000]  # the default, in seconds
JITTER = 0.2


@pytest.fixture
def published():
    """(kind, ref_id) of every job message published while the test runs."""
    messages: list[tuple[str, int]] = []

    def record(sender=None, body=None, **_):
        if sender == jobs.TASK_NAME:
            messages.append(tuple(body[0]))

    after_task_publish.connect(record, weak=False)
    yield messages
    after_task_publish.disconnect(record)


def test_the_default_schedule_is_standard_webhooks(settings):
    assert settings.MODELGATE_WEBHOOK_RETRY_DELAYS == SCHEDULE


def test_a_failing_delivery_is_retried_on_the_jittered_schedule_then_given_up(
    admin_api, alice_api, settings, published
):
    settings.MODELGATE_WEBHOOK_ALLOW_PRIVATE = True
    with Receiver(fail_first=10**6) as receiver:
        hook = admin_api.post(
            "/api/v1/webhooks/", {"url": receiver.url, "events": ["model.created"]}, format="json"
        ).json()
        alice_api.post("/api/v1/models/", {"name": "unlucky"}, format="json")
        delivery = WebhookDelivery.objects.get()
        ref = (webhooks.KIND, delivery.pk)

        now = timezone.now()
        times = [now]
        jobs.run(*ref, now=now)  # the first attempt, at once
        waits = []
        for base in SCHEDULE:
            job = Job.objects.get(kind=webhooks.KIND, ref_id=delivery.pk)
            assert job.state == "queued", job.last_error
            wait = (job.not_before - now).total_seconds()
            assert (1 - JITTER) * base <= wait <= (1 + JITTER) * base, (base, wait)
            waits.append(wait)
            # Long waits are left to the reconciler, which sends the job once it is due.
            published.clear()
            jobs.reconcile(now=job.not_before - timedelta(seconds=1))
            jobs.run(*ref, now=job.not_before - timedelta(seconds=1))  # not due: no attempt
            assert len(receiver.requests) == len(times) and ref not in published
            jobs.reconcile(now=job.not_before)
            assert (ref in published) == (wait > jobs.MAX_COUNTDOWN)
            now = job.not_before
            times.append(now)
            jobs.run(*ref, now=now)

    job = Job.objects.get(kind=webhooks.KIND, ref_id=delivery.pk)
    assert job.state == "failed" and "HTTP 503" in job.last_error
    assert len({round(w / b, 6) for w, b in zip(waits, SCHEDULE, strict=True)}) > 1  # jittered
    span = (times[-1] - times[0]).total_seconds()
    assert (1 - JITTER) * sum(SCHEDULE) <= span <= (1 + JITTER) * sum(SCHEDULE)
    assert span > 20 * 3600  # hours, not the minute it used to give up after

    log = admin_api.get(f"/api/v1/webhooks/{hook['id']}/deliveries/").json()["results"]
    [entry] = log
    assert entry["state"] == "failed"
    assert [a["status"] for a in entry["attempts"]] == [503] * (len(SCHEDULE) + 1)
    iso = [t.isoformat().replace("+00:00", "Z") for t in times]
    assert [a["at"] for a in entry["attempts"]] == iso
    # Every attempt signed at its own time, under one webhook-id.
    assert len(receiver.requests) == len(SCHEDULE) + 1
    assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == 1
    stamps = [int(r["headers"]["webhook-timestamp"]) for r in receiver.requests]
    assert stamps == [int(t.timestamp()) for t in times]
    signer = standardwebhooks.Webhook(hook["secret"])
    for request, at in zip(receiver.requests, times, strict=True):
        expected = signer.sign(request["headers"]["webhook-id"], at, request["body"].decode())
        assert request["headers"]["webhook-signature"] == expected


def test_a_retry_policy_jitters_within_its_bounds_and_ends():
    retry = jobs.Retry((300.0, 60.0), jitter=JITTER)
    delays = [retry.delay(1) for _ in range(500)]
    assert all(240 <= d <= 360 for d in delays)
    assert min(delays) < 250 and max(delays) > 350  # spread across the range
    assert 48 <= retry.delay(2) <= 72
    assert retry.delay(3) is None


def test_other_job_kinds_keep_their_short_backoff(settings):
    settings.MODELGATE_JOB_MAX_ATTEMPTS = 6
    assert jobs.RETRY.get("process_version", jobs.default_retry)() == jobs.Retry((2, 4, 8, 16, 32))
    assert jobs.RETRY[webhooks.KIND]() == jobs.Retry(tuple(SCHEDULE), jitter=JITTER)
