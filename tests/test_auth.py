"""Authentication everywhere, least privilege, tokens shown once and stored hashed."""

import re
from datetime import timedelta

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient

from registry.models import ApiToken

from .conftest import client_for, token_for, upload_version

PUBLIC = {"/healthz", "/readyz", "/api/v1/schema/", "/api/v1/docs/", "/api/v1/redoc/"}
SAMPLE_ARGS = {
    "name": "fraud",
    "ref": "1",
    "path": "model.pkl",
    "environment": "production",
    "promotion_id": "1",
    "webhook_id": "1",
    "monitor_id": "1",
    "alias": "champion",
    "token_id": "1",
    "grant_id": "1",
    "team": "default",
    "username": "alice",
    "artifact_path": "modelgate/fraud/1/model.pkl",
    "model_id": "m-1",
    "tag_key": "stage",
}
METHODS = ["get", "post", "put", "patch", "delete", "head"]
# MLflow's client sends these searches as POST: they are reads (tests/test_mlflow_tracking.py).
READING_POSTS = {
    f"/api/2.0/mlflow/{search}/search" for search in ("experiments", "runs", "logged-models")
}


def api_urls():
    """Every API URL pattern, with sample arguments filled in."""
    urls = []

    def walk(patterns, prefix):
        for entry in patterns:
            if isinstance(entry, URLResolver):
                if (prefix + str(entry.pattern)).startswith("api/"):
                    walk(entry.url_patterns, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern):
                route = prefix + str(entry.pattern)
                url = "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: SAMPLE_ARGS[m.group(1)], route)
                if url.startswith("/api/") and url not in PUBLIC:
                    urls.append(url)

    walk(get_resolver().url_patterns, "")
    return sorted(set(urls))


def test_the_url_list_covers_the_api():
    urls = api_urls()
    assert "/api/v1/models/" in urls
    assert "/api/v1/models/fraud/versions/1/files/model.pkl" in urls
    assert len(urls) >= 14


@pytest.mark.django_db
@pytest.mark.parametrize("url", api_urls())
@pytest.mark.parametrize("method", METHODS)
def test_anonymous_requests_get_401_on_every_api_endpoint(url, method):
    if url == "/api/v1/auth/tokens/" and method == "post":
        pytest.skip("token creation takes credentials in the body; tested below")
    response = getattr(APIClient(), method)(url)
    assert response.status_code in (401, 405), (method, url, response.status_code)
    if response.status_code == 401 and method != "head":
        assert response.json()["error"]["code"] == "not_authenticated"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db
def test_anonymous_token_creation_needs_credentials():
    response = APIClient().post("/api/v1/auth/tokens/", {"name": "x"}, format="json")
    assert response.status_code == 401


@pytest.mark.django_db
@pytest.mark.parametrize("url", api_urls())
@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_a_read_only_token_cannot_write_anywhere(alice, url, method):
    if url == "/api/v1/auth/tokens/" and method == "post":
        pytest.skip("a token cannot mint tokens; tested below")
    if url == "/api/v1/auth/tokens/1/" and method == "delete":
        pytest.skip("revoking your own token only lowers privilege; tested below")
    if url in READING_POSTS and method == "post":
        pytest.skip("a search, posted as MLflow's client does, is a read")
    client = client_for(alice, scopes=["read"])
    response = getattr(client, method)(url, {}, format="json")
    assert response.status_code in (403, 405), (method, url, response.status_code)


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
@pytest.mark.parametrize("url", api_urls())
def test_a_user_without_a_role_cannot_write_anywhere(reader_api, url, method):
    if url in ("/api/v1/auth/tokens/", "/api/v1/auth/tokens/1/"):
        pytest.skip("anyone may manage their own tokens")
    if url in READING_POSTS and method == "post":
        pytest.skip("a search, posted as MLflow's client does, is a read")
    response = getattr(reader_api, method)(url, {}, format="json")
    assert response.status_code in (403, 404, 405), (method, url, response.status_code)
    assert response.status_code != 404 or method == "delete"


def test_a_contributor_cannot_delete_a_model(alice_api, model):
    response = alice_api.delete(f"/api/v1/models/{model}/")
    assert response.status_code == 403
    assert alice_api.get(f"/api/v1/models/{model}/").status_code == 200


def test_an_admin_can_delete_a_model(admin_api, alice_api, model):
    assert admin_api.delete(f"/api/v1/models/{model}/").status_code == 204
    assert alice_api.get(f"/api/v1/models/{model}/").status_code == 404


def test_token_secret_is_shown_once_and_stored_as_a_hash(alice):
    response = APIClient().post(
        "/api/v1/auth/tokens/",
        {"username": "alice", "password": "alice-password-1", "name": "ci", "scopes": ["read"]},
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    secret = body["token"]
    assert body["scopes"] == ["read"]
    stored = ApiToken.objects.get(pk=body["id"])
    assert secret not in stored.secret_hash and secret.split("_")[-1] not in str(stored.__dict__)
    listing = client_for(alice).get("/api/v1/auth/tokens/").json()
    assert all("token" not in item for item in listing)
    me = APIClient()
    me.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert me.get("/api/v1/me/").json() == {
        "username": "alice",
        "groups": [],
        "teams": {"default": "contributor"},
        "permissions": ["read"],
        "is_staff": False,
    }


def test_wrong_password_gets_401_with_a_message(alice):
    response = APIClient().post(
        "/api/v1/auth/tokens/",
        {"username": "alice", "password": "nope", "name": "x"},
        format="json",
    )
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Wrong username or password."


def test_a_user_cannot_grant_a_token_more_than_their_role(alice):
    response = APIClient().post(
        "/api/v1/auth/tokens/",
        {"username": "alice", "password": "alice-password-1", "name": "x", "scopes": ["admin"]},
        format="json",
    )
    assert response.status_code == 403
    assert not ApiToken.objects.exists()


def test_a_token_cannot_mint_another_token(alice):
    response = client_for(alice).post("/api/v1/auth/tokens/", {"name": "x"}, format="json")
    assert response.status_code == 401


def test_revoked_and_expired_tokens_are_refused(alice):
    secret = token_for(alice)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.get("/api/v1/models/").status_code == 200
    token = ApiToken.objects.get()
    assert client.delete(f"/api/v1/auth/tokens/{token.pk}/").status_code == 204
    assert client.get("/api/v1/models/").status_code == 401

    secret = token_for(alice)
    ApiToken.objects.filter(revoked_at__isnull=True).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.get("/api/v1/models/").status_code == 401


def test_a_garbage_token_is_refused(db):
    client = APIClient()
    for header in ["Bearer nope", "Bearer mgt_x_y", "Bearer mgt_000000000000_abc", "Bearer "]:
        client.credentials(HTTP_AUTHORIZATION=header)
        assert client.get("/api/v1/models/").status_code == 401


def test_one_user_cannot_revoke_another_users_token(alice, bob):
    token_for(alice)
    token = ApiToken.objects.get(user=alice)
    assert client_for(bob).delete(f"/api/v1/auth/tokens/{token.pk}/").status_code == 404
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None


def test_token_creation_is_throttled(alice, settings):
    from django.core.cache import cache

    cache.clear()
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"token_create": "3/min"},
    }
    from rest_framework.settings import api_settings
    from rest_framework.throttling import ScopedRateThrottle

    api_settings.reload()
    ScopedRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
    try:
        codes = [
            APIClient()
            .post(
                "/api/v1/auth/tokens/",
                {"username": "alice", "password": "wrong", "name": "x"},
                format="json",
            )
            .status_code
            for _ in range(5)
        ]
    finally:
        cache.clear()
        ScopedRateThrottle.THROTTLE_RATES = {"token_create": "1000/min"}
    assert codes[:3] == [401, 401, 401]
    assert codes[3:] == [429, 429]


def test_session_users_need_csrf_for_writes(alice, model):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.get("/api/v1/models/").status_code == 200
    response = client.post("/api/v1/models/", {"name": "other"}, format="json")
    assert response.status_code == 403


def test_version_uploads_belong_to_their_creator(alice_api, model, db):
    from .conftest import _make_user

    mallory = _make_user("mallory", ["contributors"])
    number = alice_api.post(
        f"/api/v1/models/{model}/versions/",
        {"files": [{"path": "a.bin", "size": 1, "sha256": "0" * 64}]},
        format="json",
    ).json()["version"]
    response = client_for(mallory).put(
        f"/api/v1/models/{model}/versions/{number}/files/a.bin",
        b"x",
        content_type="application/octet-stream",
    )
    assert response.status_code == 403
    assert upload_version  # the helper stays importable for other modules
