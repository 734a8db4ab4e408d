"""Teams own models: one access check behind every door, names that do not leak, scoped
tokens and service accounts, and promotions that need the model team's maintainers.

Three people: `ann` of team A (which owns the private model `fraud`), `ben` of team B,
and `gil`, who is in no team but was granted read on `fraud`. Every URL pattern of the
REST API, the MLflow API and the pages that names a model is tried by each of them, with
every method; for ben, a private model must answer exactly as a model that does not exist.
"""

import re

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from registry.models import Environment, ModelVersion, Promotion, TeamMembership
from registry.services import teams

from .conftest import _make_user, client_for, join_team, token_for, upload_version

METHODS = ["get", "post", "put", "patch", "delete", "head"]
ARGS = {
    "ref": "1",
    "path": "model.bin",
    "alias": "champion",
    "number": "1",
    "grant_id": "1",
    "artifact_path": "modelgate/{name}/1/model.bin",
}


def model_urls(prefix: str) -> list[str]:
    """Every URL pattern under `prefix` that names a model, as a template on {name}."""
    urls = []

    def walk(patterns, route):
        for entry in patterns:
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, route + str(entry.pattern))
            elif isinstance(entry, URLPattern):
                full = route + str(entry.pattern)
                if "<str:name>" not in full and "artifact_path" not in full:
                    continue
                url = "/" + re.sub(
                    r"<(?:\w+:)?(\w+)>",
                    lambda m: "{name}" if m.group(1) == "name" else ARGS[m.group(1)],
                    full,
                )
                if url.startswith(prefix):
                    urls.append(url)

    walk(get_resolver().url_patterns, "")
    return sorted(set(urls))


API_URLS = model_urls("/api/")
PAGE_URLS = [
    url
    for url in model_urls("/")
    if not url.startswith(("/api/", "/teams/", "/environments/"))  # <name> is not a model's
]


@pytest.fixture
def world(db):
    ann = _make_user("ann", team=None)
    ben = _make_user("ben", team=None)
    gil = _make_user("gil", team=None)
    join_team(ann, "maintainer", "team-a")
    join_team(ben, "contributor", "team-b")
    ann_api = client_for(ann)
    created = ann_api.post("/api/v1/models/", {"name": "fraud"}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["team"] == "team-a" and created.json()["visibility"] == "team"
    upload_version(ann_api, "fraud", {"model.bin": b"weights"})
    ModelVersion.objects.filter(number=1).update(state="ready", scan_status="clean")
    grant = ann_api.post(
        "/api/v1/models/fraud/grants/", {"user": "gil", "level": "read"}, format="json"
    )
    assert grant.status_code == 201, grant.content
    return {"ann": ann, "ben": ben, "gil": gil}


def _call(client, method: str, url: str):
    if method in ("get", "head", "delete"):
        return getattr(client, method)(url)
    return getattr(client, method)(url, {}, format="json")


@pytest.mark.parametrize("template", API_URLS)
@pytest.mark.parametrize("method", METHODS)
def test_a_private_model_is_indistinguishable_from_a_missing_one_for_another_team(
    world, template, method
):
    ben = client_for(world["ben"])
    real = _call(ben, method, template.format(name="fraud"))
    ghost = _call(ben, method, template.format(name="no-such-model"))
    assert real.status_code == ghost.status_code, (method, template, real.content)
    assert real.status_code in (403, 404, 405), (method, template, real.status_code)
    if real.status_code != 405 and method != "head":
        body = real.content.replace(b"fraud", b"no-such-model")
        assert body == ghost.content, (method, template)


@pytest.mark.parametrize("template", [u for u in API_URLS if "grants" not in u])
def test_members_and_grantees_read_what_the_outsider_cannot(world, template):
    url = template.format(name="fraud")
    for who in ("ann", "gil"):
        response = client_for(world[who]).get(url)
        assert response.status_code not in (403, 404), (who, url, response.content)


@pytest.mark.parametrize("template", API_URLS)
@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_a_read_grant_never_writes(world, template, method):
    response = _call(client_for(world["gil"]), method, template.format(name="fraud"))
    assert response.status_code in (400, 403, 405), (method, template, response.content)
    if response.status_code == 400:  # a bad body is judged only after access
        pytest.fail(f"{method} {template} read the body of a caller who may not write")


@pytest.mark.parametrize("template", PAGE_URLS)
def test_pages_answer_404_to_another_team(world, template):
    client = Client()
    client.force_login(world["ben"])
    real, ghost = (client.get(template.format(name=n)) for n in ("fraud", "no-such-model"))
    assert real.status_code == ghost.status_code, template
    assert real.status_code in (404, 405), (template, real.status_code)  # 405: POST-only
    if real.status_code == 405:
        real, ghost = (client.post(template.format(name=n)) for n in ("fraud", "no-such-model"))
        assert real.status_code == ghost.status_code == 404, (template, real.status_code)
    client.force_login(world["gil"])
    response = client.get(template.format(name="fraud"))
    assert response.status_code in (200, 302, 403, 405), (template, response.status_code)


def test_lists_searches_and_counts_leave_out_what_you_cannot_see(world):
    ben, ann = client_for(world["ben"]), client_for(world["ann"])
    assert ben.get("/api/v1/models/").json()["results"] == []
    assert ben.get("/api/v1/models/?search=fra").json()["results"] == []
    assert [m["name"] for m in ann.get("/api/v1/models/?team=team-a").json()["results"]] == [
        "fraud"
    ]
    assert ann.get("/api/v1/models/?team=team-b").json()["results"] == []
    mlflow = ben.get("/api/2.0/mlflow/registered-models/search").json()
    assert mlflow.get("registered_models", []) == []
    assert ben.get("/api/2.0/mlflow/model-versions/search").json().get("model_versions", []) == []
    events = ben.get("/api/v1/events/").json()["results"]
    assert not [e for e in events if e.get("model") == "fraud"]
    assert ben.get("/api/v1/events/?model=fraud").json()["results"] == []
    mlflow_get = ben.get("/api/2.0/mlflow/registered-models/get?name=fraud")
    assert mlflow_get.status_code == 404
    assert mlflow_get.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    page = Client()
    page.force_login(world["ben"])
    assert b"/models/fraud/" not in page.get("/").content
    assert b">fraud<" not in page.get("/audit/").content


def test_internal_models_are_read_by_everyone_signed_in_and_written_by_the_team(world):
    ann, ben = client_for(world["ann"]), client_for(world["ben"])
    made = ann.patch("/api/v1/models/fraud/", {"visibility": "internal"}, format="json")
    assert made.status_code == 200
    assert ben.get("/api/v1/models/fraud/").status_code == 200
    assert ben.get("/api/v1/models/fraud/versions/1/files/model.bin").status_code == 200
    refused = ben.patch("/api/v1/models/fraud/", {"description": "mine"}, format="json")
    assert refused.status_code == 403
    assert (
        ben.post("/api/v1/models/fraud/versions/", {"files": []}, format="json").status_code == 403
    )
    # A contributor may write but not manage: visibility and grants are the maintainers'.
    teams.set_member(world["ann"], teams.get_team("team-a"), "ben", "contributor")
    changed = ben.patch("/api/v1/models/fraud/", {"description": "ok"}, format="json")
    assert changed.status_code == 200
    assert (
        ben.patch("/api/v1/models/fraud/", {"visibility": "team"}, format="json").status_code == 403
    )
    grant = ben.post(
        "/api/v1/models/fraud/grants/", {"user": "gil", "level": "write"}, format="json"
    )
    assert grant.status_code == 403


def test_every_change_of_membership_grants_or_visibility_is_audited(world):
    from registry.models import Event

    ann = client_for(world["ann"])
    ann.patch("/api/v1/models/fraud/", {"visibility": "internal"}, format="json")
    teams.set_member(world["ann"], teams.get_team("team-a"), "ben", "viewer")
    teams.remove_member(world["ann"], teams.get_team("team-a"), "ben")
    grant = ann.get("/api/v1/models/fraud/grants/").json()[0]
    assert ann.delete(f"/api/v1/models/fraud/grants/{grant['id']}/").status_code == 204
    types = list(Event.objects.order_by("id").values_list("type", flat=True))
    for expected in (
        "model.access_granted",
        "model.visibility_changed",
        "team.member_added",
        "team.member_removed",
        "model.access_revoked",
    ):
        assert expected in types


# --- machines --------------------------------------------------------------------------


def test_a_ci_service_account_token_pushes_to_its_model_and_nothing_else(world):
    ann = world["ann"]
    team_a = teams.get_team("team-a")
    other = client_for(ann).post("/api/v1/models/", {"name": "fraud-two"}, format="json")
    assert other.status_code == 201
    client_for(world["ben"]).post("/api/v1/models/", {"name": "churn"}, format="json")
    account = teams.create_service_account(ann, team_a, "ci")
    assert account.user.username == "team-a-ci" and not account.user.has_usable_password()
    ci = APIClient()
    ci.credentials(HTTP_AUTHORIZATION="Bearer " + token_for_models(account.user, ["fraud"]))

    number = upload_version(ci, "fraud", {"model.bin": b"from ci"})
    assert number == 2
    assert (
        ci.post("/api/v1/models/fraud-two/versions/", {"files": []}, format="json").status_code
        == 404
    )
    assert ci.get("/api/v1/models/churn/").status_code == 404
    assert [m["name"] for m in ci.get("/api/v1/models/").json()["results"]] == ["fraud"]
    from registry.models import Event

    assert Event.objects.filter(type="version.created", actor_name="team-a-ci").exists()
    # Out of the team: the token stops at once (no cache to wait for).
    TeamMembership.objects.filter(user=account.user).delete()
    assert ci.get("/api/v1/models/fraud/").status_code == 404
    assert (
        ci.post("/api/v1/models/fraud/versions/", {"files": []}, format="json").status_code
        in (403, 404)  # 403: its user may no longer write anywhere, refused at the door
    )


def token_for_models(user, models: list[str]) -> str:
    from registry.services.tokens import create_token

    return create_token(user, "ci", ["read", "write"], models=models)[1]


def test_a_token_never_exceeds_its_user_nor_reaches_past_its_limits(world):
    from registry.errors import NotFound, PermissionDenied
    from registry.services.tokens import create_token

    with pytest.raises(NotFound):  # ben cannot see fraud, so cannot name it
        create_token(world["ben"], "x", ["read"], models=["fraud"])
    with pytest.raises(PermissionDenied):  # nor a team he is not in
        create_token(world["ben"], "x", ["read"], teams=["team-a"])
    gil = APIClient()
    gil.credentials(HTTP_AUTHORIZATION="Bearer " + token_for(world["gil"]))
    assert gil.get("/api/v1/models/fraud/").status_code == 200
    assert (
        gil.post("/api/v1/models/fraud/versions/", {"files": []}, format="json").status_code == 403
    )


# --- reviews ----------------------------------------------------------------------------


def test_a_promotion_needing_a_reviewer_and_a_maintainer_needs_both_and_never_the_requester(
    world,
):
    ann, ben = world["ann"], world["ben"]
    team_a = teams.get_team("team-a")
    dora = _make_user("dora", ["reviewers"], team=None)
    join_team(dora, "viewer", "team-a")
    mo = _make_user("mo", team=None)
    join_team(mo, "maintainer", "team-a")
    teams.set_member(ann, team_a, "ben", "contributor")
    Environment.objects.create(
        name="production", required_approvals=1, reviewer_group="reviewers",
        maintainer_approvals=1, gates=[],
    )  # fmt: skip
    # ann is a maintainer and requests it: her own approval is refused.
    promotion = client_for(ann).post(
        "/api/v1/models/fraud/versions/1/promotions/", {"environment": "production"},
        format="json",
    ).json()  # fmt: skip
    url = f"/api/v1/promotions/{promotion['id']}/reviews/"
    approve = {"decision": "approve", "comment": "looks good"}
    assert client_for(ann).post(url, approve, format="json").status_code == 403
    # ben writes to the model but is neither a reviewer nor a maintainer.
    assert client_for(ben).post(url, approve, format="json").status_code == 403
    # The reviewer alone is not enough...
    assert client_for(dora).post(url, approve, format="json").status_code == 201
    assert Promotion.objects.get(pk=promotion["id"]).state == "pending"
    # ...the model team's maintainer completes it.
    assert client_for(mo).post(url, approve, format="json").status_code == 201
    assert Promotion.objects.get(pk=promotion["id"]).state in ("approved", "promoting", "promoted")


def test_two_reviewers_do_not_stand_in_for_a_maintainer(world):
    from registry.services import promotions

    ann = world["ann"]
    r1 = _make_user("r1", ["reviewers"], team=None)
    r2 = _make_user("r2", ["reviewers"], team=None)
    both = _make_user("both", ["reviewers"], team=None)
    for user in (r1, r2):
        join_team(user, "viewer", "team-a")
    join_team(both, "maintainer", "team-a")
    environment = Environment.objects.create(
        name="production", required_approvals=1, maintainer_approvals=1, gates=[]
    )
    promotion = Promotion(model=teams.get_team("team-a").models.get(), environment=environment)
    assert not promotions.approvals_met(promotion, [r1, r2])
    assert not promotions.approvals_met(promotion, [both])  # one person counts once
    assert promotions.approvals_met(promotion, [r1, both])
    assert not promotions.approvals_met(promotion, [ann])  # a maintainer, not a reviewer


def test_a_token_minted_by_a_limited_token_stays_within_its_limits(world, admin_user):
    from registry.services.tokens import create_token

    made = client_for(world["ann"]).post("/api/v1/models/", {"name": "fraud-two"}, format="json")
    assert made.status_code == 201
    limited = create_token(admin_user, "ops", ["read", "admin"], models=["fraud"])[1]
    parent = APIClient()
    parent.credentials(HTTP_AUTHORIZATION="Bearer " + limited)
    assert parent.get("/api/v1/auth/tokens/").json()[0]["models"] == ["fraud"]
    refused = parent.post(
        "/api/v1/auth/tokens/", {"name": "wider", "models": ["fraud-two"]}, format="json"
    )
    assert refused.status_code == 404  # beyond its reach, fraud-two does not exist
    child = parent.post("/api/v1/auth/tokens/", {"name": "same"}, format="json")
    assert child.status_code == 201, child.content
    inherited = APIClient()
    inherited.credentials(HTTP_AUTHORIZATION="Bearer " + child.json()["token"])
    assert inherited.get("/api/v1/models/fraud/").status_code == 200
    assert inherited.get("/api/v1/models/fraud-two/").status_code == 404
