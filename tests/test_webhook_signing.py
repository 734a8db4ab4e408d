"""Standard Webhooks signatures, checked by the `standardwebhooks` library as a receiver
would: real deliveries from the real sender over real HTTP, then replayed too late."""

from datetime import UTC, datetime, timedelta

import pytest
import standardwebhooks
from django.utils import timezone
from standardwebhooks import WebhookVerificationError

from registry.models import WebhookDelivery
from registry.services import webhooks

from .receivers import Receiver

TOLERANCE = timedelta(minutes=5)  # the library's, fixed


@pytest.fixture
def hook(admin_api, alice_api, settings):
    """`hook(secret=None)` subscribes a real receiver to model.created and returns
    (secret, send); `send(at=None)` creates a model and delivers its event through the real
    sender with its clock at `at` (default: now), returning what the receiver got."""
    settings.MODELGATE_WEBHOOK_ALLOW_PRIVATE = True
    with Receiver() as receiver:

        def make(secret: str | None = None):
            body = {"url": receiver.url, "events": ["model.created"]}
            if secret:
                body["secret"] = secret
            created = admin_api.post("/api/v1/webhooks/", body, format="json")
            assert created.status_code == 201, created.content

            def send(at: datetime | None = None) -> dict:
                name = f"signed-{len(receiver.requests)}"
                made = alice_api.post("/api/v1/models/", {"name": name}, format="json")
                assert made.status_code == 201, made.content
                delivery = WebhookDelivery.objects.get(event__model_name=name)
                webhooks.deliver(delivery.pk, at)
                assert WebhookDelivery.objects.get(pk=delivery.pk).state == "delivered"
                return receiver.requests[-1]

            return created.json()["secret"], send

        yield make


def test_a_real_delivery_verifies_with_the_library(hook):
    secret, send = hook()
    sent = send()
    assert secret.startswith("whsec_")
    payload = standardwebhooks.Webhook(secret).verify(sent["body"], sent["headers"])
    assert payload["type"] == "model.created" and payload["model"] == "signed-0"
    assert sent["headers"]["webhook-signature"].startswith("v1,")
    assert abs(int(sent["headers"]["webhook-timestamp"]) - timezone.now().timestamp()) < 5


def test_a_tampered_body_or_id_does_not_verify(hook):
    secret, send = hook()
    sent = send()
    receiver = standardwebhooks.Webhook(secret)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        receiver.verify(sent["body"].replace(b"signed-", b"forged-"), sent["headers"])
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        receiver.verify(sent["body"], {**sent["headers"], "webhook-id": "msg_1_0"})


def test_a_captured_delivery_replayed_after_the_tolerance_is_refused(hook):
    """The library checks the signed timestamp against its own clock, so a replay (the
    same bytes arriving later) is made here by having the sender sign them earlier."""
    secret, send = hook()
    receiver = standardwebhooks.Webhook(secret)
    fresh = send(at=timezone.now() - TOLERANCE + timedelta(seconds=30))
    receiver.verify(fresh["body"], fresh["headers"])  # 4.5 minutes old: still accepted

    stale = send(at=timezone.now() - TOLERANCE - timedelta(seconds=5))
    with pytest.raises(WebhookVerificationError, match="too old"):
        receiver.verify(stale["body"], stale["headers"])
    # Refused for its age only: its signature is the one the library makes for those headers.
    at = datetime.fromtimestamp(int(stale["headers"]["webhook-timestamp"]), tz=UTC)
    expected = receiver.sign(stale["headers"]["webhook-id"], at, stale["body"].decode())
    assert stale["headers"]["webhook-signature"] == expected

    early = send(at=timezone.now() + TOLERANCE + timedelta(seconds=5))
    with pytest.raises(WebhookVerificationError, match="too new"):
        receiver.verify(early["body"], early["headers"])


def test_a_secret_made_before_standard_webhooks_keys_by_its_bytes_and_keeps_the_old_header(
    hook,
):
    legacy = "an-old-secret_from-before-1"  # not whsec_: as an earlier release made them
    _, send = hook(secret=legacy)
    sent = send()
    standardwebhooks.Webhook(legacy.encode()).verify(sent["body"], sent["headers"])
    # The old header is unchanged, so receivers not yet migrated keep working.
    assert sent["headers"]["X-Modelgate-Signature"] == webhooks.sign(legacy, sent["body"])
    # Passed as a str the library would base64-decode it into another key (documented).
    with pytest.raises(WebhookVerificationError):
        standardwebhooks.Webhook(legacy).verify(sent["body"], sent["headers"])


def test_a_supplied_whsec_secret_must_be_base64_of_24_bytes_or_more(admin_api, settings):
    settings.MODELGATE_WEBHOOK_ALLOW_PRIVATE = True

    def create(secret):
        body = {"url": "http://127.0.0.1:9/x", "events": ["*"], "secret": secret}
        return admin_api.post("/api/v1/webhooks/", body, format="json").status_code

    assert create("whsec_" + "A" * 32) == 201  # 24 bytes
    assert create("whsec_" + "A" * 28) == 400  # 21 bytes: too short a key
    assert create("whsec_not-base64!-at-all-but-long-enough") == 400
    assert webhooks.signing_key("whsec_" + "A" * 32) == b"\0" * 24
    assert webhooks.signing_key("plain-secret-16+") == b"plain-secret-16+"
