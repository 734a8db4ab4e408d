"""Webhooks: SSRF-safe URLs, signed payloads, retries with backoff, every attempt logged."""

import hashlib
import hmac

import pytest
import standardwebhooks

from registry.models import Event, WebhookDelivery
from registry.services import webhooks

from .conftest import wait_for
from .receivers import Receiver


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/x",
        "http://localhost/x",
        "http://10.0.0.5/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "http://192.168.1.1/",
        "http://[::ffff:10.0.0.1]/x",  # IPv4-mapped
        "http://[::10.0.0.1]/x",  # IPv4-compatible
        "http://[64:ff9b::a9fe:a9fe]/x",  # NAT64 of 169.254.169.254
        "http://[64:ff9b:1::808:808]/x",  # local-use NAT64
        "http://[2002:7f00:1::]/x",  # 6to4 of 127.0.0.1
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/x",  # Teredo
        "http://100.64.0.1/x",  # carrier-grade NAT
        "http://[fd00::2]/x",  # unique local
        "ftp://example.com/x",
        "http://user:pw@example.com/",
        "not a url",
    ],
)
def test_private_and_odd_urls_are_refused(admin_api, url):
    response = admin_api.post("/api/v1/webhooks/", {"url": url, "events": ["*"]}, format="json")
    assert response.status_code == 400, url
    assert response.json()["error"]["message"]


def test_the_refusal_names_the_setting_that_allows_private_networks(admin_api):
    response = admin_api.post(
        "/api/v1/webhooks/", {"url": "http://[::ffff:10.0.0.1]/", "events": ["*"]}, format="json"
    )
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "non-public address (::ffff:a00:1, which carries 10.0.0.1)" in message
    assert "MODELGATE_WEBHOOK_ALLOW_PRIVATE" in message


def test_only_admins_manage_webhooks(alice_api, admin_api, settings):
    settings.MODELGATE_WEBHOOK_ALLOW_PRIVATE = True
    body = {"url": "http://127.0.0.1:9/hook", "events": ["model.created"]}
    assert alice_api.post("/api/v1/webhooks/", body, format="json").status_code == 403
    assert alice_api.get("/api/v1/webhooks/").status_code == 403
    created = admin_api.post("/api/v1/webhooks/", body, format="json")
    assert created.status_code == 201
    assert created.json()["secret"].startswith("whsec_")  # Standard Webhooks' format
    listed = admin_api.get("/api/v1/webhooks/").json()
    assert "secret" not in listed[0]


def test_the_deprecated_signature_is_still_an_hmac_of_the_body():
    body = b'{"type": "x"}'
    expected = "sha256=" + hmac.new(b"s" * 16, body, hashlib.sha256).hexdigest()
    assert webhooks.sign("s" * 16, body) == expected


def test_a_failing_receiver_is_retried_with_backoff_until_it_answers(
    admin_api, alice_api, settings, stack, monkeypatch
):
    settings.MODELGATE_WEBHOOK_ALLOW_PRIVATE = True
    monkeypatch.setenv("MODELGATE_WEBHOOK_RETRY_DELAYS", "1,1")  # seconds, not hours
    stack.worker(settings.CELERY_BROKER_URL)  # a worker process, as in production
    with Receiver(fail_first=2) as receiver:
        hook = admin_api.post(
            "/api/v1/webhooks/", {"url": receiver.url, "events": ["model.created"]}, format="json"
        )
        assert hook.status_code == 201
        alice_api.post("/api/v1/models/", {"name": "hooked"}, format="json")
        delivery = wait_for(
            lambda: WebhookDelivery.objects.filter(state="delivered").first(), timeout=60
        )
    assert len(receiver.requests) == 3
    assert [a["status"] for a in delivery.attempts] == [503, 503, 204]
    # Every attempt verifies, and carries the same webhook-id: the receiver's dedupe key.
    secret = hook.json()["secret"]
    for sent in receiver.requests:
        standardwebhooks.Webhook(secret).verify(sent["body"], sent["headers"])
    assert len({sent["headers"]["webhook-id"] for sent in receiver.requests}) == 1
    assert receiver.requests[-1]["json"]["type"] == "model.created"
    assert receiver.requests[-1]["json"]["model"] == "hooked"
    log = admin_api.get(f"/api/v1/webhooks/{hook.json()['id']}/deliveries/").json()
    assert log["results"][0]["state"] == "delivered"
    assert len(log["results"][0]["attempts"]) == 3


def test_events_not_subscribed_to_are_not_delivered(admin_api, alice_api, settings):
    settings.MODELGATE_WEBHOOK_ALLOW_PRIVATE = True
    admin_api.post(
        "/api/v1/webhooks/",
        {"url": "http://127.0.0.1:9/x", "events": ["promotion.promoted"]},
        format="json",
    )
    alice_api.post("/api/v1/models/", {"name": "quiet"}, format="json")
    assert Event.objects.filter(type="model.created").exists()
    assert not WebhookDelivery.objects.exists()
