"""The team page and the model page's access forms, in Chromium against a live server:
a maintainer shares a private model with another team and a user, then takes it back;
the other team's member sees it appear and disappear."""

import pytest

from registry.models import Event

from .conftest import _make_user, client_for, join_team, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_admin_creates_a_team_from_the_teams_page(page, live_server, admin_user):
    sign_in(page, live_server.url, "admin")
    page.goto(f"{live_server.url}/teams/")
    page.get_by_label("Team name").fill("fraud")
    page.get_by_role("button", name="Create team").click()
    page.wait_for_url("**/teams/fraud/")
    assert Event.objects.filter(type="team.created", data__team="fraud").exists()
    page.goto(f"{live_server.url}/teams/")
    page.get_by_label("Team name").fill("Bad Name")
    page.get_by_role("button", name="Create team").click()
    assert "Team names are" in page.content()


def test_a_maintainer_shares_a_private_model_from_its_page(new_context, live_server):
    ann = _make_user("ann", team=None)
    ben = _make_user("ben", team=None)
    join_team(ann, "maintainer", "team-a")
    join_team(ben, "contributor", "team-b")
    made = client_for(ann).post("/api/v1/models/", {"name": "fraud"}, format="json")
    assert made.status_code == 201
    base = live_server.url

    ben_page = new_context().new_page()
    sign_in(ben_page, base, "ben")
    assert ben_page.goto(f"{base}/models/fraud/").status == 404
    ben_page.goto(f"{base}/")
    assert ben_page.get_by_role("link", name="fraud", exact=True).count() == 0

    page = new_context().new_page()
    sign_in(page, base, "ann")
    page.goto(f"{base}/models/fraud/")
    assert page.get_by_test_id("model-team").inner_text() == "team-a"
    page.get_by_label("Team or user").fill("team:team-b")
    page.get_by_label("Level").select_option("read")
    page.get_by_role("button", name="Grant").click()
    assert "team team-b: read" in page.get_by_test_id("grants").inner_text()

    assert ben_page.goto(f"{base}/models/fraud/").status == 200
    assert ben_page.get_by_role("link", name="Upload a new version").count() == 0

    page.get_by_role("button", name="Take back").click()
    assert "No grants" in page.get_by_test_id("grants").inner_text()
    assert ben_page.goto(f"{base}/models/fraud/").status == 404

    page.get_by_label("Visible to").select_option("internal")
    page.get_by_role("button", name="Save").click()
    assert "everyone" in page.get_by_test_id("model-visibility").inner_text()
    assert ben_page.goto(f"{base}/models/fraud/").status == 200

    # The team page: members and roles, the models ben may see, a service account.
    page.goto(f"{base}/teams/team-a/")
    page.get_by_label("Name").fill("ci")
    page.get_by_role("button", name="Add service account").click()
    members = page.get_by_test_id("members").inner_text()
    assert "ann" in members and "team-a-ci" in members and "service account" in members
    page.get_by_role("button", name="New token").click()
    assert page.get_by_test_id("secret").inner_text().startswith("mgt_")
    types = set(Event.objects.values_list("type", flat=True))
    assert {"model.access_granted", "model.access_revoked", "model.visibility_changed"} <= types
    assert "team.service_account_created" in types
