"""Who is calling: the client's Bearer token (a Modelgate API token) or Basic credentials."""

import base64
import binascii

from registry.services import access, signin, tokens

from .errors import PERMISSION_DENIED, UNAUTHENTICATED, MlflowError


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
        try:
            # Every Basic call is a sign-in: axes counts failures per username and address.
            user = signin.authenticate(request, username, password) if sep else None
        except signin.LockedOut as locked:
            raise _locked_out(locked) from None
        if user is None:
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


def _locked_out(locked: signin.LockedOut) -> MlflowError:
    # 401, not 429: MLflow's client retries a 429 (honouring Retry-After, for minutes on
    # end), while a 401 fails the call at once with this message.
    error = MlflowError(UNAUTHENTICATED, locked.message, native_code=locked.code)
    error.headers["Retry-After"] = str(locked.retry_after)
    return error
