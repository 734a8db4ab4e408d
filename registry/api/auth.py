"""Bearer tokens for scripts, the session (with CSRF) for the browser."""

from rest_framework import authentication, exceptions

from registry.services import access, tokens


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = tokens.authenticate(raw.strip())
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        return token.user, token

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="modelgate"'


class SessionAuthentication(authentication.SessionAuthentication):
    """DRF's session auth; a browser session carries every scope its user's role grants."""


def request_scopes(request) -> set[str]:
    """Scopes in force: the role's, narrowed by the token's when a token was used."""
    granted = access.role_scopes(request.user)
    token = getattr(request, "auth", None)
    if token is not None and hasattr(token, "scopes"):
        granted &= set(token.scopes)
    return granted
