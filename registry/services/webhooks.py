"""Webhooks: signed JSON POSTs for subscribed event types, retried for hours, logged.

Deliveries are created in the transaction of the event they carry, so an event is never
recorded without its deliveries nor delivered without being recorded.

Each attempt is signed the Standard Webhooks way (https://www.standardwebhooks.com/):
`webhook-id` (the delivery's, the same on every retry), `webhook-timestamp` (this attempt's
unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
New secrets are `whsec_` + base64 of 32 random bytes, the key. A secret of any other form
(those made before) keeps working: its key is the secret's UTF-8 bytes, and the old
`X-Modelgate-Signature: sha256=<hex HMAC of the body, keyed by the secret string>` is still
sent (deprecated; dropped in the next release).
"""

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpcore
import httpx
import standardwebhooks
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from registry.errors import InvalidInput, NotFound, PermissionDenied
from registry.models import Event, Webhook, WebhookDelivery

from . import access, jobs
from .events import record_event
from .locking import for_update
from .webhook_net import PinnedTransport, Resolver, resolve_checked, system_resolver

KIND = "deliver_webhook"
SIGNATURE_HEADER = "X-Modelgate-Signature"  # deprecated: the Standard Webhooks headers replace it
SECRET_PREFIX = "whsec_"
MIN_KEY_BYTES = 24  # the spec's minimum for HMAC keys
RETRY_JITTER = 0.2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _whsec_key(secret: str) -> bytes | None:
    if not secret.startswith(SECRET_PREFIX):
        return None
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        return None
    return key if len(key) >= MIN_KEY_BYTES else None


def signing_key(secret: str) -> bytes:
    """The Standard Webhooks HMAC key: a `whsec_` secret's base64-decoded bytes, else the
    secret's own UTF-8 bytes (so a receiver verifies with `Webhook(secret.encode())`)."""
    key = _whsec_key(secret)
    return secret.encode() if key is None else key


def sign(secret: str, body: bytes) -> str:
    """The deprecated X-Modelgate-Signature, unchanged: keyed by the secret string itself."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def message_id(delivery: WebhookDelivery) -> str:
    """Stable across retries. The row id alone repeats once a database is rebuilt; with
    its creation time (in microseconds) it does not. No dots: they delimit what is signed."""
    created = (delivery.created_at - _EPOCH) // timedelta(microseconds=1)
    return f"msg_{delivery.pk}_{created:x}"


def standard_headers(secret: str, msg_id: str, at: datetime, body: bytes) -> dict[str, str]:
    at = at.astimezone(UTC)  # the library reads the datetime's wall clock as UTC
    signature = standardwebhooks.Webhook(signing_key(secret)).sign(msg_id, at, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


def _parse_url(url: object) -> tuple[str, int]:
    if not isinstance(url, str) or len(url) > 2000:
        raise InvalidInput("'url' must be an http(s) URL.")
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidInput("'url' has an invalid port.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("'url' must be an http(s) URL with a host.")
    if parts.username or parts.password:
        raise InvalidInput("'url' must not carry credentials; use the signing secret.")
    return parts.hostname, port


def check_url(url: object, resolve: Resolver = system_resolver) -> str:
    """Refuse URLs whose host resolves to any non-public address (SSRF), unless
    MODELGATE_WEBHOOK_ALLOW_PRIVATE is set. Checked again, once, at each delivery."""
    host, port = _parse_url(url)
    if not settings.MODELGATE_WEBHOOK_ALLOW_PRIVATE:
        resolve_checked(host, port, resolve, allow_private=False)
    return url


def _clean(data: dict, partial: bool) -> dict:
    unknown = set(data) - {"url", "events", "secret", "description", "active"}
    if unknown:
        raise InvalidInput(f"Unknown fields: {', '.join(sorted(unknown))}.")
    clean = {}
    if "url" in data or not partial:
        clean["url"] = check_url(data.get("url"))
    if "events" in data or not partial:
        events = data.get("events")
        if (
            not isinstance(events, list)
            or not events
            or not all(isinstance(e, str) and 0 < len(e) <= 64 for e in events)
        ):
            raise InvalidInput("'events' must be a non-empty list of event types (or '*').")
        clean["events"] = sorted(set(events))
    if "secret" in data:
        secret = data["secret"]
        if not isinstance(secret, str) or not 16 <= len(secret) <= 200:
            raise InvalidInput("'secret' must be 16-200 characters.")
        if secret.startswith(SECRET_PREFIX) and _whsec_key(secret) is None:
            raise InvalidInput(
                f"A '{SECRET_PREFIX}' secret must be followed by base64 of at least "
                f"{MIN_KEY_BYTES} bytes."
            )
        clean["secret"] = secret
    if "description" in data:
        clean["description"] = str(data["description"])[:200]
    if "active" in data:
        if not isinstance(data["active"], bool):
            raise InvalidInput("'active' must be true or false.")
        clean["active"] = data["active"]
    return clean


def _require_admin(user) -> None:
    if not access.is_admin(user):
        raise PermissionDenied("Only an administrator may manage webhooks.")


def get_webhook(webhook_id: int) -> Webhook:
    webhook = Webhook.objects.filter(pk=webhook_id).first()
    if webhook is None:
        raise NotFound(f"Webhook {webhook_id} does not exist.")
    return webhook


def create_webhook(user, data: dict) -> Webhook:
    _require_admin(user)
    clean = _clean(data, partial=False)
    clean.setdefault("secret", new_secret())
    with transaction.atomic():
        webhook = Webhook.objects.create(created_by=user, **clean)
        record_event(
            "webhook.created",
            user,
            data={"webhook": webhook.pk, "url": webhook.url, "events": webhook.events},
        )
    return webhook


def update_webhook(user, webhook: Webhook, data: dict) -> Webhook:
    _require_admin(user)
    clean = _clean(data, partial=True)
    with transaction.atomic():
        Webhook.objects.filter(pk=webhook.pk).update(**clean)
        record_event(
            "webhook.updated",
            user,
            data={"webhook": webhook.pk, "fields": sorted(k for k in clean if k != "secret")},
        )
    return Webhook.objects.get(pk=webhook.pk)


def delete_webhook(user, webhook: Webhook) -> None:
    _require_admin(user)
    with transaction.atomic():
        record_event("webhook.deleted", user, data={"webhook": webhook.pk, "url": webhook.url})
        webhook.delete()


def fan_out(event: Event) -> None:
    """Create a delivery for each active webhook that wants this event (same transaction)."""
    for webhook in Webhook.objects.filter(active=True):
        if webhook.wants(event.type):
            delivery = WebhookDelivery.objects.create(webhook=webhook, event=event)
            jobs.enqueue(KIND, delivery.pk)


def payload(event: Event) -> dict:
    return {
        "id": event.pk,
        "type": event.type,
        "actor": event.actor_name,
        "at": event.at.isoformat().replace("+00:00", "Z"),
        "model": event.model_name or None,
        "version": event.version_number,
        "data": event.data,
    }


def _give_up(delivery_id: int, error: str) -> None:
    WebhookDelivery.objects.filter(pk=delivery_id, state=WebhookDelivery.State.PENDING).update(
        state=WebhookDelivery.State.FAILED
    )


def _retry() -> jobs.Retry:
    return jobs.Retry(tuple(settings.MODELGATE_WEBHOOK_RETRY_DELAYS), jitter=RETRY_JITTER)


@jobs.handler(KIND, give_up=_give_up, retry=_retry, clocked=True)
def deliver(
    delivery_id: int,
    now: datetime | None = None,
    *,
    resolve: Resolver = system_resolver,
    network: httpcore.NetworkBackend | None = None,
) -> None:
    """One attempt; a failure raises so the job is retried later.

    The host is resolved once, every address checked, and the request sent to the first
    one; `resolve` and `network` (where connections go) are DNS and the network, injectable.
    """
    delivery = (
        WebhookDelivery.objects.select_related("webhook", "event").filter(pk=delivery_id).first()
    )
    if delivery is None or delivery.state != WebhookDelivery.State.PENDING:
        return
    at = now or timezone.now()
    webhook = delivery.webhook
    body = json.dumps(payload(delivery.event), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Modelgate-Webhooks/1",
        **standard_headers(webhook.secret, message_id(delivery), at, body),
        SIGNATURE_HEADER: sign(webhook.secret, body),
        "X-Modelgate-Event": delivery.event.type,
        "X-Modelgate-Delivery": str(delivery.pk),
    }
    started, address, status, error = time.monotonic(), None, None, ""
    try:
        host, port = _parse_url(webhook.url)
        allow_private = settings.MODELGATE_WEBHOOK_ALLOW_PRIVATE
        address = resolve_checked(host, port, resolve, allow_private)
        with httpx.Client(
            transport=PinnedTransport(address, network),
            timeout=settings.MODELGATE_WEBHOOK_TIMEOUT,
            follow_redirects=False,
            trust_env=False,  # a proxy would resolve the name again
        ) as client:
            status = client.post(webhook.url, content=body, headers=headers).status_code
        if not 200 <= status < 300:
            error = f"HTTP {status}"
    except (httpx.HTTPError, InvalidInput) as exc:
        error = str(getattr(exc, "message", exc)) or type(exc).__name__
    attempt = {
        "at": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "address": address,
        "status": status,
        "error": error,
        "duration_ms": round((time.monotonic() - started) * 1000),
    }
    with transaction.atomic():
        delivery = for_update(WebhookDelivery).get(pk=delivery_id)
        delivery.attempts = [*delivery.attempts, attempt]
        if not error:
            delivery.state, delivery.delivered_at = WebhookDelivery.State.DELIVERED, at
        delivery.save(update_fields=["attempts", "state", "delivered_at"])
    if error:
        raise RuntimeError(f"delivery {delivery_id} to {webhook.url} failed: {error}")
