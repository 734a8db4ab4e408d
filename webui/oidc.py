"""mozilla-django-oidc wired to Modelgate: its endpoints come from the issuer's discovery
document, read at the first sign-in (not at start: the site must come up while the identity
provider is down), the authorization-code flow always uses PKCE (S256), the ID token's
issuer and audience are checked, and registry/services/sso.py decides who gets in.

Routes (config/urls.py mounts them only when MODELGATE_OIDC_ISSUER is set): /oidc/authenticate/
sends the browser to the identity provider, /oidc/callback/ (the redirect URI to register
there) takes it back.
"""

import logging
import threading

import httpx
import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import SuspiciousOperation
from django.shortcuts import redirect
from django.views.generic import View
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from registry.services import sso

log = logging.getLogger(__name__)

UNAVAILABLE_URL = "/login/?sso=unavailable"
_ENDPOINTS = ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")
_discovered: dict[str, dict] = {}
_discovery_lock = threading.Lock()


class DiscoveryError(Exception):
    pass


def discovery() -> dict:
    """The issuer's /.well-known/openid-configuration, fetched once per process (a failure
    is not remembered: the next sign-in tries again)."""
    issuer = settings.MODELGATE_OIDC_ISSUER
    with _discovery_lock:
        if issuer not in _discovered:
            _discovered[issuer] = _fetch_discovery(issuer)
        return _discovered[issuer]


def _fetch_discovery(issuer: str) -> dict:
    url = f"{issuer}/.well-known/openid-configuration"
    try:
        response = httpx.get(url, timeout=settings.OIDC_TIMEOUT)
        response.raise_for_status()
        document = response.json()
    except (httpx.HTTPError, ValueError) as error:
        raise DiscoveryError(f"{url}: {error}") from None
    if not isinstance(document, dict) or document.get("issuer", "").rstrip("/") != issuer:
        # OpenID Connect Discovery 4.3: a document naming another issuer must not be used.
        raise DiscoveryError(f"{url} names issuer {document.get('issuer')!r}, not {issuer!r}")
    missing = [key for key in _ENDPOINTS if not document.get(key)]
    if missing:
        raise DiscoveryError(f"{url} lacks {', '.join(missing)}")
    return document


class OIDCBackend(OIDCAuthenticationBackend):
    """Answers only the callback (an authorization code, never a password)."""

    def __init__(self, *args, **kwargs):
        # Not the library's __init__, which reads the endpoints: Django builds every backend
        # for each authenticate() and each request's get_user(), password sign-ins included.
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = settings.OIDC_RP_SIGN_ALGO
        self.OIDC_RP_IDP_SIGN_KEY = None
        self.UserModel = get_user_model()

    OIDC_OP_TOKEN_ENDPOINT = property(lambda self: discovery()["token_endpoint"])
    OIDC_OP_USER_ENDPOINT = property(lambda self: discovery()["userinfo_endpoint"])
    OIDC_OP_JWKS_ENDPOINT = property(lambda self: discovery()["jwks_uri"])

    def authenticate(self, request, **credentials):
        if request is None or "nonce" not in credentials or credentials.get("password"):
            return None
        try:
            return super().authenticate(request, **credentials)
        except (requests.RequestException, DiscoveryError, jwt.InvalidTokenError) as error:
            log.warning("single sign-on failed: %s", error)
            return None

    def verify_token(self, token, **kwargs):
        payload = super().verify_token(token, **kwargs)
        if "nonce" in kwargs:  # the ID token (a signed userinfo answer comes without one)
            audience = payload.get("aud")
            audience = audience if isinstance(audience, list) else [audience]
            if payload.get("iss") != discovery()["issuer"]:
                raise SuspiciousOperation("The ID token comes from another issuer.")
            if self.OIDC_RP_CLIENT_ID not in audience:
                raise SuspiciousOperation("The ID token is meant for another client.")
        return payload

    def get_token(self, payload):
        if settings.MODELGATE_OIDC_REDIRECT_URI:  # must be the one the authorization used
            payload = {**payload, "redirect_uri": settings.MODELGATE_OIDC_REDIRECT_URI}
        return super().get_token(payload)

    def get_or_create_user(self, access_token, id_token, payload):
        userinfo = self.get_userinfo(access_token, id_token, payload)
        if userinfo.get("sub") != payload.get("sub"):
            raise SuspiciousOperation("userinfo describes someone other than the ID token.")
        try:
            # Some providers put the group claim in the ID token only, others in userinfo.
            return sso.sign_in(self.request, {**payload, **userinfo})
        except sso.Refused as refused:
            log.warning("single sign-on refused: %s", refused)
            return None

    def get_user(self, user_id):
        # The library's skips the is_active check: a deactivated user keeps no session.
        return ModelBackend.get_user(self, user_id)


class Authenticate(OIDCAuthenticationRequestView):
    """Redirects to the identity provider with state, nonce and a PKCE challenge."""

    def __init__(self, **kwargs):
        View.__init__(self, **kwargs)  # not the library's: it would read the endpoint now
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID

    @property
    def OIDC_OP_AUTH_ENDPOINT(self) -> str:
        return discovery()["authorization_endpoint"]

    def get_extra_params(self, request):
        params = super().get_extra_params(request)
        if settings.MODELGATE_OIDC_REDIRECT_URI:
            params = {**params, "redirect_uri": settings.MODELGATE_OIDC_REDIRECT_URI}
        return params

    def get(self, request):
        try:
            discovery()
        except DiscoveryError as error:
            log.warning("single sign-on unavailable: %s", error)
            return redirect(UNAVAILABLE_URL)
        return super().get(request)


class Callback(OIDCAuthenticationCallbackView):
    """Where the identity provider sends the browser back (<base>/oidc/callback/); a failed
    or refused sign-in lands on the sign-in page saying so (LOGIN_REDIRECT_URL_FAILURE)."""

    def get(self, request):
        try:
            return super().get(request)
        except SuspiciousOperation as error:  # an unknown state, a bad nonce or token
            log.warning("single sign-on refused: %s", error)
            return self.login_failure()
