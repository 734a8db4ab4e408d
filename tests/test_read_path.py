"""The read path (version detail, alias resolution, lists): few queries, cached token
lookups that still honour revocation, and the same JSON as DRF's generic serializers."""

import time
from datetime import timedelta

import httpx
import pytest
from django.conf import settings
from django.test import RequestFactory
from django.utils import timezone
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.test import APIClient

from registry.api.serializers import VersionDetailSerializer, VersionSummarySerializer
from registry.models import ApiToken, ModelVersion, TeamMembership
from registry.services import queries, tokens
from registry.services.versions import read_version

from .conftest import client_for, token_for, upload_version
from .processes import Web, base_env


@pytest.fixture
def versions(alice_api, model):
    """fraud/1 with two files, a rich record and aliases; fraud/2 plain."""
    upload_version(
        alice_api,
        model,
        {"model.pkl": b"weights", "conf/params.json": b"{}"},
        description="first",
        metrics={"accuracy": 0.93, "auc": 0.8},
        params={"depth": "4"},
        tags={"team": "risk"},
        lineage={"code_commit": "abc123", "dataset": "s3://d/v1"},
    )
    upload_version(alice_api, model, {"model.pkl": b"other"})
    ModelVersion.objects.update(state="ready", scan_status="clean")  # as the worker would
    for alias, number in [("champion", 1), ("candidate", 1), ("latest-good", 2)]:
        response = alice_api.put(
            f"/api/v1/models/{model}/aliases/{alias}/", {"version": number}, format="json"
        )
        assert response.status_code == 200, response.content
    # Fields the pipeline would fill, so that every output field has a real value.
    ModelVersion.objects.filter(number=1).update(
        signature={"inputs": [{"name": "x", "type": "double"}]},
        framework="sklearn",
        model_card="# Card",
        scan_status="clean",
        scan_findings=[{"rule": "none"}],
        package_state="ready",
        package_sha256="f" * 64,
        package_size=123,
        baseline=None,
        explanations={"method": "shap", "features": {"x": 1.0}},
    )
    return model


def _request():
    return Request(RequestFactory().get("/api/v1/models/fraud/versions/1/"))


def test_the_detail_is_exactly_what_drfs_generic_serializer_gives(versions, alice):
    version = read_version(alice, versions, "1")
    serializer = VersionDetailSerializer(version, context={"request": _request()})
    generic = serializers.ModelSerializer.to_representation(serializer, version)
    assert serializer.data == generic
    assert list(serializer.data) == list(generic)  # same key order too
    assert generic["aliases"] == ["candidate", "champion"] and len(generic["files"]) == 2
    assert generic["package"]["download_url"] and generic["finalized_at"].endswith("Z")


def test_a_summary_is_exactly_what_drfs_generic_serializer_gives(versions):
    page = list(ModelVersion.objects.filter(model__name=versions).only(*queries.SUMMARY_FIELDS))
    queries.attach_alias_names(page)
    for version in page:
        serializer = VersionSummarySerializer(version)
        generic = serializers.ModelSerializer.to_representation(serializer, version)
        assert serializer.data == generic and list(serializer.data) == list(generic)


@pytest.mark.parametrize("ref", ["1", "@champion", "latest"])
def test_a_version_read_takes_two_queries(versions, alice_api, ref, django_assert_num_queries):
    url = f"/api/v1/models/{versions}/versions/{ref}/"
    assert alice_api.get(url).status_code == 200  # the token lookup is now cached
    # version + model + creator + the caller's access to the model, then aliases + files
    with django_assert_num_queries(2):
        body = alice_api.get(url).json()
    assert body["version"] == (2 if ref == "latest" else 1)


def test_a_list_page_takes_three_queries(versions, alice_api, django_assert_num_queries):
    url = f"/api/v1/models/{versions}/versions/?tag=team:risk&metric=accuracy>0.9"
    assert alice_api.get(url).status_code == 200
    # the model with the caller's access to it, versions (with model and creator), aliases
    with django_assert_num_queries(3):
        body = alice_api.get(url).json()
    assert [v["version"] for v in body["results"]] == [1]
    assert body["results"][0]["aliases"] == ["candidate", "champion"]


def test_reads_answer_missing_things_as_before(versions, alice_api):
    def error(path):
        response = alice_api.get(path)
        return response.status_code, response.json()["error"]["message"]

    assert error("/api/v1/models/nope/versions/1/") == (404, "Model 'nope' does not exist.")
    assert error("/api/v1/models/nope/versions/@champion/")[0] == 404
    assert error("/api/v1/models/nope/versions/") == (404, "Model 'nope' does not exist.")
    assert error(f"/api/v1/models/{versions}/versions/9/") == (
        404,
        f"Version '9' of model '{versions}' does not exist.",
    )
    assert error(f"/api/v1/models/{versions}/versions/@gone/")[0] == 404
    assert error(f"/api/v1/models/{versions}/versions/99999999999/")[0] == 404
    assert error(f"/api/v1/models/{versions}/versions/v1/")[0] == 400
    # A model without versions (or a filter matching none) is an empty page, not a 404.
    alice_api.post("/api/v1/models/", {"name": "empty"}, format="json")
    assert alice_api.get("/api/v1/models/empty/versions/").json()["results"] == []
    none = alice_api.get(f"/api/v1/models/{versions}/versions/?tag=team:nobody")
    assert none.status_code == 200 and none.json()["results"] == []


def test_an_alias_move_shows_at_once(versions, alice_api):
    url = f"/api/v1/models/{versions}/versions/@champion/"
    assert alice_api.get(url).json()["version"] == 1
    alice_api.put(f"/api/v1/models/{versions}/aliases/champion/", {"version": 2}, format="json")
    moved = alice_api.get(url).json()
    assert moved["version"] == 2 and moved["aliases"] == ["champion", "latest-good"]


# --- the token cache -------------------------------------------------------------------


def test_a_cached_token_still_stops_at_once_when_revoked_or_its_user_changes(alice, model):
    client = client_for(alice)
    for _ in range(2):
        assert client.get("/api/v1/models/").status_code == 200
    token = ApiToken.objects.order_by("-pk").first()
    assert client.delete(f"/api/v1/auth/tokens/{token.pk}/").status_code == 204
    assert client.get("/api/v1/models/").status_code == 401

    client = client_for(alice)
    assert client.post("/api/v1/models/", {"name": "a"}, format="json").status_code == 201
    TeamMembership.objects.filter(user=alice).update(role="viewer")  # no longer may write
    assert client.post("/api/v1/models/", {"name": "b"}, format="json").status_code == 403
    assert client.get("/api/v1/models/").status_code == 200
    alice.is_active = False
    alice.save()
    assert client.get("/api/v1/models/").status_code == 401


def test_a_cached_token_expires_on_time(alice, model):
    client = client_for(alice)
    assert client.get("/api/v1/models/").status_code == 200
    # As another process would change it: no signal reaches this one's cache.
    soon = timezone.now() + timedelta(seconds=0.5)
    ApiToken.objects.update(expires_at=soon)
    tokens.forget_cached_tokens()
    assert client.get("/api/v1/models/").status_code == 200  # cached, with expires_at
    time.sleep(0.6)
    assert client.get("/api/v1/models/").status_code == 401


def test_a_change_made_elsewhere_is_seen_within_the_cache_bound(alice, model):
    client = client_for(alice)
    assert client.get("/api/v1/models/").status_code == 200
    # A revocation by another process: a plain UPDATE, no signal in this process.
    ApiToken.objects.update(revoked_at=timezone.now())
    time.sleep(tokens.CACHE_SECONDS + 0.1)
    assert client.get("/api/v1/models/").status_code == 401


def test_a_garbage_or_wrong_secret_is_never_cached(alice):
    secret = token_for(alice)
    wrong = secret[:-3] + ("aaa" if not secret.endswith("aaa") else "bbb")
    client = APIClient()
    for header in [f"Bearer {wrong}", f"Bearer {secret}", f"Bearer {wrong}"]:
        client.credentials(HTTP_AUTHORIZATION=header)
        expected = 200 if header.endswith(secret) else 401
        assert client.get("/api/v1/models/").status_code == expected


def test_revocation_reaches_every_gunicorn_worker_within_the_bound(
    transactional_db, tmp_path, alice
):
    """Two worker processes each cache the token; a revoke served by one of them is
    enforced by both within CACHE_SECONDS."""
    secret = token_for(alice)
    web = Web(base_env(settings.CELERY_BROKER_URL), tmp_path, workers=2).start()
    try:
        http = httpx.Client(base_url=web.url, headers={"Authorization": f"Bearer {secret}"})
        for _ in range(20):  # fresh connections spread over both workers
            response = http.get("/api/v1/models/", headers={"Connection": "close"})
            assert response.status_code == 200
        token = ApiToken.objects.get(user=alice)
        assert http.delete(f"/api/v1/auth/tokens/{token.pk}/").status_code == 204
        time.sleep(tokens.CACHE_SECONDS + 0.2)
        for _ in range(20):
            response = http.get("/api/v1/models/", headers={"Connection": "close"})
            assert response.status_code == 401
    finally:
        web.stop()
