"""Who is calling: the client's Bearer token (a Modelgate API token) or Basic credentials."""

import base64
import binascii
import hashlib

from django.conf import settings
from django.contrib.auth import authenticate as django_authenticate
from django.core.cache import cache

from registry.services import access, tokens

from .errors import PERMISSION_DENIED, REQUEST_LIMIT_EXCEEDED, UNAUTHENTICATED, MlflowError


def authenticate(request):
    """(user, scopes in force) for the request, or MlflowError(UNAUTHENTICATED)."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, raw = header.partition(" ")
    scheme, raw = scheme.lower(), raw.strip()
    if scheme == "bearer" and raw:
        token = tokens.authenticate(raw)
        if token is None:
            raise MlflowError(UNAUTHENTICATED, "Invalid, expired or revoked token.")
        return token.user, access.role_scopes(token.user) & set(token.scopes)
    if scheme == "basic" and raw:
        try:
            username, sep, password = base64.b64decode(raw, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            username, sep, password = "", "", ""
        keys = _failure_keys(request, username)
        _refuse_when_throttled(keys)
        user = django_authenticate(request, username=username, password=password) if sep else None
        if user is None or not user.is_active:
            _count_failure(keys)
            raise MlflowError(UNAUTHENTICATED, "Invalid username or password.")
        return user, access.role_scopes(user)
    raise MlflowError(
        UNAUTHENTICATED,
        "Authentication is required: set MLFLOW_TRACKING_TOKEN to a Modelgate API token, "
        "or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD.",
    )


def require_scope(scopes: set[str], level: str) -> None:
    if level not in scopes:
        raise MlflowError(PERMISSION_DENIED, f"This needs the '{level}' scope.")


# Password guessing: failures are counted per client address and per username (a token
# never is: it is a 256-bit secret), and past the limit every attempt is refused for the
# rest of the window, right ones included, so guessing gains nothing.


def _failure_keys(request, username: str) -> list[str]:
    who = hashlib.sha256(username.encode()).hexdigest()[:32]
    return [f"auth-fail:ip:{request.META.get('REMOTE_ADDR', '')}", f"auth-fail:user:{who}"]


def _refuse_when_throttled(keys: list[str]) -> None:
    counts = cache.get_many(keys)
    if any(count >= settings.MODELGATE_AUTH_FAILURES for count in counts.values()):
        minutes = max(1, settings.MODELGATE_AUTH_FAILURE_WINDOW // 60)
        raise MlflowError(
            REQUEST_LIMIT_EXCEEDED,
            f"Too many failed sign-ins; try again in {minutes} minute(s) or use a token.",
        )


def _count_failure(keys: list[str]) -> None:
    for key in keys:
        cache.add(key, 0, timeout=settings.MODELGATE_AUTH_FAILURE_WINDOW)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=settings.MODELGATE_AUTH_FAILURE_WINDOW)
