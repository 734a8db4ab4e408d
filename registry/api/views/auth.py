"""/api/v1/auth/tokens/ and /api/v1/me/"""

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from registry.errors import InvalidInput, PermissionDenied, RegistryError
from registry.models import ApiToken
from registry.services import access, signin, tokens
from registry.services.client_address import client_address

from ..auth import request_scopes
from ..serializers import (
    MeSerializer,
    TokenCreatedSerializer,
    TokenCreateSerializer,
    TokenSerializer,
)
from .common import errors, json_object


class NotAuthenticated(RegistryError):
    code, status = "not_authenticated", 401


class ClientAddressThrottle(ScopedRateThrottle):
    """Per client address as MODELGATE_TRUSTED_PROXIES resolves it (DRF's own reading trusts
    any X-Forwarded-For unless NUM_PROXIES is set)."""

    def get_ident(self, request):
        return client_address(request)


class TokenList(APIView):
    throttle_scope = "token_create"
    access_levels = {"POST": None}  # username and password in the body are the credentials

    def get_throttles(self):
        return [ClientAddressThrottle()] if self.request.method == "POST" else []

    def get_permissions(self):
        return [] if self.request.method == "POST" else super().get_permissions()

    @extend_schema(operation_id="tokens_list", responses={200: TokenSerializer(many=True)})
    def get(self, request):
        queryset = ApiToken.objects.filter(user=request.user, revoked_at__isnull=True)
        return Response(TokenSerializer(queryset, many=True).data)

    @extend_schema(
        operation_id="tokens_create",
        request=TokenCreateSerializer,
        responses={201: TokenCreatedSerializer, **errors(400, 429)},
    )
    def post(self, request):
        data = json_object(request)
        unknown = set(data) - {"username", "password", "name", "scopes", "expires_in_days"}
        unknown -= {"model", "environment"}  # they bind an ingest token
        unknown -= {"teams", "models"}  # they limit where the token acts
        if unknown:
            raise InvalidInput(f"Unknown fields: {', '.join(sorted(unknown))}.")
        user = request.user if request.user and request.user.is_authenticated else None
        if "username" in data or "password" in data:
            username, password = data.get("username"), data.get("password")
            if not isinstance(username, str) or not isinstance(password, str):
                raise InvalidInput("'username' and 'password' must both be strings.")
            user = signin.authenticate(request._request, username, password)  # or LockedOut
            if user is None:
                raise NotAuthenticated("Wrong username or password.")
        elif user is None:
            raise NotAuthenticated("Send a username and password, or sign in.")
        elif getattr(request.auth, "model_id", None):
            raise PermissionDenied(
                "An ingest token can only write prediction records and feedback."
            )
        elif request.auth is not None and access.ADMIN not in request_scopes(request):
            raise NotAuthenticated("Create tokens with your username and password or a session.")
        # An admin token minting another bounds it (scopes, lifetime) and becomes its parent.
        parent = request.auth if user is request.user else None
        token, secret = tokens.create_token(
            user,
            data.get("name"),
            data.get("scopes"),
            data.get("expires_in_days"),
            model=data.get("model"),
            environment=data.get("environment"),
            parent=parent,
            teams=data.get("teams"),
            models=data.get("models"),
        )
        body = TokenCreatedSerializer(token, context={"secret": secret}).data
        return Response(body, status=status.HTTP_201_CREATED)


class TokenDetail(APIView):
    access_levels = {"DELETE": "read"}  # revoking your own token needs no more than reading

    @extend_schema(operation_id="tokens_revoke", responses={204: None, **errors(404)})
    def delete(self, request, token_id):
        tokens.revoke_token(request.user, token_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class Me(APIView):
    @extend_schema(operation_id="me", responses={200: MeSerializer})
    def get(self, request):
        user = request.user
        return Response(
            {
                "username": user.get_username(),
                "groups": access.user_groups(user),
                "teams": {
                    m.team.name: m.role for m in user.team_memberships.select_related("team")
                },
                "permissions": sorted(request_scopes(request)),
                "is_staff": bool(user.is_staff),
            }
        )
