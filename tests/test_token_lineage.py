"""A token never mints one that outlives it or holds a scope it lacks; revoking a token
revokes everything minted from it. Each case is the attack that once worked."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from registry.models import ApiToken, Event
from registry.services.tokens import create_token

pytestmark = pytest.mark.django_db
TOKENS = "/api/v1/auth/tokens/"


def bearer(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def day_admin(admin_user):
    """A one-day admin token, as a CI job would hold."""
    token, secret = create_token(admin_user, "ci", ["admin", "read"], expires_in_days=1)
    return token, bearer(secret)


def test_a_one_day_token_cannot_mint_a_365_day_one(day_admin):
    _, client = day_admin
    response = client.post(TOKENS, {"name": "long", "expires_in_days": 365}, format="json")
    assert response.status_code == 400, response.content
    assert "outlives" in response.json()["error"]["message"]
    assert ApiToken.objects.count() == 1


def test_a_child_asked_for_no_lifetime_ends_with_its_parent(day_admin):
    parent, client = day_admin
    response = client.post(TOKENS, {"name": "child"}, format="json")
    assert response.status_code == 201, response.content
    child = ApiToken.objects.get(pk=response.json()["id"])
    assert child.parent_id == parent.pk and response.json()["parent"] == parent.pk
    assert child.expires_at == parent.expires_at
    assert child.scopes == parent.scopes


def test_a_token_cannot_mint_a_scope_it_lacks(day_admin):
    _, client = day_admin  # admin + read, no write or review
    for scopes in (["write"], ["read", "review"], ["ingest"]):
        body = {"name": "wider", "scopes": scopes}
        if scopes == ["ingest"]:
            body["model"] = "anything"
        response = client.post(TOKENS, body, format="json")
        assert response.status_code == 403, (scopes, response.content)
        assert "lacks" in response.json()["error"]["message"]
    assert ApiToken.objects.count() == 1


def test_revoking_a_token_revokes_its_descendants_and_audits_them(admin_user):
    root, root_secret = create_token(admin_user, "root", ["admin", "read"], expires_in_days=2)
    child, child_secret = create_token(admin_user, "child", parent=root)
    grandchild, grand_secret = create_token(admin_user, "grand", ["read"], parent=child)
    _, sibling_secret = create_token(admin_user, "other", ["read"], expires_in_days=2)
    for secret in (root_secret, child_secret, grand_secret):
        assert bearer(secret).get("/api/v1/models/").status_code == 200

    response = bearer(sibling_secret).delete(f"{TOKENS}{root.pk}/")
    assert response.status_code == 204
    for secret in (root_secret, child_secret, grand_secret):
        assert bearer(secret).get("/api/v1/models/").status_code == 401
    assert bearer(sibling_secret).get("/api/v1/models/").status_code == 200
    event = Event.objects.filter(type="token.revoked").get()
    assert event.data["descendants"] == sorted([child.pk, grandchild.pk])


def test_a_revoked_parent_cannot_mint_even_from_a_stale_instance(admin_user):
    parent, _ = create_token(admin_user, "p", ["admin", "read"], expires_in_days=1)
    ApiToken.objects.filter(pk=parent.pk).update(revoked_at=timezone.now())
    with pytest.raises(Exception, match="revoked"):
        create_token(admin_user, "late", ["read"], parent=parent)
    assert ApiToken.objects.count() == 1


def test_a_password_made_token_has_no_parent_and_the_role_bounds_it(admin_user):
    admin_user.set_password("pw-12345-long")
    admin_user.save()
    response = APIClient().post(
        TOKENS,
        {"username": admin_user.username, "password": "pw-12345-long", "name": "laptop"},
        format="json",
    )
    assert response.status_code == 201
    token = ApiToken.objects.get(pk=response.json()["id"])
    assert token.parent_id is None
    assert token.expires_at > timezone.now() + timedelta(days=80)
