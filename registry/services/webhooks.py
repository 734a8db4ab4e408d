"""Webhooks: signed JSON POSTs for subscribed event types, retried with backoff, logged.

Deliveries are created in the transaction of the event they carry, so an event is never
recorded without its deliveries nor delivered without being recorded.
"""

import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import time
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from registry.errors import InvalidInput, NotFound, PermissionDenied
from registry.models import Event, Webhook, WebhookDelivery

from . import access, jobs
from .events import record_event
from .locking import for_update

KIND = "deliver_webhook"
SIGNATURE_HEADER = "X-Modelgate-Signature"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def check_url(url: object) -> str:
    """Refuse URLs that resolve to loopback, link-local or private addresses (SSRF),
    unless MODELGATE_WEBHOOK_ALLOW_PRIVATE is set."""
    if not isinstance(url, str) or len(url) > 2000:
        raise InvalidInput("'url' must be an http(s) URL.")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("'url' must be an http(s) URL with a host.")
    if parts.username or parts.password:
        raise InvalidInput("'url' must not carry credentials; use the signing secret.")
    if settings.MODELGATE_WEBHOOK_ALLOW_PRIVATE:
        return url
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except OSError:
        raise InvalidInput(f"'{parts.hostname}' does not resolve.") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global or address.is_multicast:
            raise InvalidInput(
                f"'{parts.hostname}' resolves to a non-public address ({address}); refused.",
                {"address": str(address)},
            )
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
    clean.setdefault("secret", secrets.token_urlsafe(32))
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


@jobs.handler(KIND, give_up=_give_up)
def deliver(delivery_id: int) -> None:
    """One attempt; a failure raises so the job is retried with backoff."""
    delivery = (
        WebhookDelivery.objects.select_related("webhook", "event").filter(pk=delivery_id).first()
    )
    if delivery is None or delivery.state != WebhookDelivery.State.PENDING:
        return
    webhook = delivery.webhook
    body = json.dumps(payload(delivery.event), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Modelgate-Webhooks/1",
        SIGNATURE_HEADER: sign(webhook.secret, body),
        "X-Modelgate-Event": delivery.event.type,
        "X-Modelgate-Delivery": str(delivery.pk),
    }
    started, status, error = time.monotonic(), None, ""
    try:
        check_url(webhook.url)  # again at send time: DNS may have changed since
        response = httpx.post(
            webhook.url,
            content=body,
            headers=headers,
            timeout=settings.MODELGATE_WEBHOOK_TIMEOUT,
            follow_redirects=False,
        )
        status = response.status_code
        if not 200 <= status < 300:
            error = f"HTTP {status}"
    except (httpx.HTTPError, InvalidInput) as exc:
        error = str(getattr(exc, "message", exc)) or type(exc).__name__
    attempt = {
        "at": timezone.now().isoformat().replace("+00:00", "Z"),
        "status": status,
        "error": error,
        "duration_ms": round((time.monotonic() - started) * 1000),
    }
    with transaction.atomic():
        delivery = for_update(WebhookDelivery).get(pk=delivery_id)
        delivery.attempts = [*delivery.attempts, attempt]
        if not error:
            delivery.state, delivery.delivered_at = WebhookDelivery.State.DELIVERED, timezone.now()
        delivery.save(update_fields=["attempts", "state", "delivered_at"])
    if error:
        raise RuntimeError(f"delivery {delivery_id} to {webhook.url} failed: {error}")
