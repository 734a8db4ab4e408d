"""API tokens: shown once, stored as a hash, scoped, expiring, revocable."""

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from registry.errors import InvalidInput, NotFound, PermissionDenied
from registry.models import ApiToken

from . import access
from .events import record_event

PREFIX = "mgt"
DEFAULT_DAYS = 90


def _hash(secret: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough; no password stretching needed.
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    user, name: str, scopes: list[str] | None = None, expires_in_days: int | None = None
) -> tuple[ApiToken, str]:
    """Returns the token and its secret; the secret is not kept and cannot be shown again."""
    granted = access.role_scopes(user)
    if not granted:
        raise PermissionDenied("Inactive users cannot create tokens.")
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise InvalidInput("'name' must be 1-100 characters.")
    if scopes is None:
        scopes = sorted(granted)
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        raise InvalidInput(
            "'scopes' must be a non-empty list.", {"allowed": list(access.ALL_SCOPES)}
        )
    unknown = set(scopes) - set(access.ALL_SCOPES)
    if unknown:
        raise InvalidInput(
            f"Unknown scopes: {', '.join(sorted(unknown))}.", {"allowed": list(access.ALL_SCOPES)}
        )
    beyond = set(scopes) - granted
    if beyond:
        raise PermissionDenied(
            f"Your role does not grant: {', '.join(sorted(beyond))}.", {"granted": sorted(granted)}
        )
    max_days = settings.MODELGATE_TOKEN_MAX_DAYS
    days = DEFAULT_DAYS if expires_in_days is None else expires_in_days
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= max_days:
        raise InvalidInput(f"'expires_in_days' must be between 1 and {max_days}.")
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user,
            name=name.strip(),
            key_id=key_id,
            secret_hash=_hash(secret),
            scopes=sorted(set(scopes)),
            expires_at=timezone.now() + timedelta(days=days),
        )
        record_event(
            "token.created",
            user,
            data={"token_id": token.pk, "name": token.name, "scopes": token.scopes},
        )
    return token, f"{PREFIX}_{key_id}_{secret}"


def authenticate(raw: str) -> ApiToken | None:
    """The active token for a presented secret, or None."""
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    token = ApiToken.objects.select_related("user").filter(key_id=parts[1]).first()
    if token is None or not hmac.compare_digest(token.secret_hash, _hash(parts[2])):
        return None
    if not token.is_active or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


def revoke_token(user, token_id: int) -> ApiToken:
    token = ApiToken.objects.filter(pk=token_id).first()
    if token is None or (token.user_id != user.pk and not access.is_admin(user)):
        raise NotFound(f"Token {token_id} does not exist.")
    with transaction.atomic():
        if token.revoked_at is None:
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])
            record_event("token.revoked", user, data={"token_id": token.pk, "name": token.name})
    return token
