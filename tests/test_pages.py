"""The web UI's browse and settings pages: models, model page, compare, audit, settings."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from registry.models import (
    Alias,
    ApiToken,
    Environment,
    Event,
    ModelVersion,
    RegisteredModel,
    Webhook,
    WebhookDelivery,
)
from registry.services import registered_models
from webui.charts import metric_chart

from .conftest import sign_in, upload_version

PAGES = [
    "/",
    "/models/new/",
    "/models/fraud/",
    "/models/fraud/compare/?v=1&v=2",
    "/audit/",
    "/settings/tokens/",
    "/settings/webhooks/",
    "/settings/webhooks/1/",
    "/settings/environments/",
]


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def make_model(user, name: str, description: str = "", tags: dict | None = None):
    return registered_models.create_model(user, name, description=description, tags=tags)


def ready_version(api, model: str, metrics: dict, params: dict | None = None, files=None) -> int:
    number = upload_version(
        api,
        model,
        files or {"model.bin": repr(metrics).encode()},
        metrics=metrics,
        params=params or {},
    )
    ModelVersion.objects.filter(model__name=model, number=number).update(
        state="ready", scan_status="clean", package_state="ready"
    )
    return number


def version(model: str, number: int) -> ModelVersion:
    return ModelVersion.objects.get(model__name=model, number=number)


def rows_text(html: str) -> str:
    return re.sub(r"\s+", " ", html)


# --- sign-in ----------------------------------------------------------------------------


@pytest.mark.parametrize("url", PAGES)
def test_every_page_sends_a_visitor_to_the_sign_in_page(db, url):
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


def test_a_wrong_password_says_so(alice):
    response = Client().post("/login/", {"username": "alice", "password": "not-it"})
    assert response.status_code == 200
    assert "Wrong username or password." in response.content.decode()


def test_the_right_password_signs_in_and_lands_on_the_models_page(alice):
    client = Client()
    response = client.post(
        "/login/", {"username": "alice", "password": "alice-password-1"}, follow=True
    )
    assert response.redirect_chain[-1][0] == "/"
    assert "Sign out" in response.content.decode()


# --- models list ------------------------------------------------------------------------


@pytest.fixture
def catalogue(alice, alice_api):
    """Three models: fraud (v1, v2, live in production at 2), churn (tagged), empty."""
    make_model(alice, "fraud", "Flags fraudulent payments", {"team": "risk"})
    make_model(alice, "churn", "Who cancels next month", {"team": "growth", "task": "gbm"})
    make_model(alice, "empty", "Nothing here yet")
    ready_version(alice_api, "fraud", {"accuracy": 0.8})
    ready_version(alice_api, "fraud", {"accuracy": 0.9})
    Environment.objects.create(name="production")
    Alias.objects.create(
        model=RegisteredModel.objects.get(name="fraud"),
        name="production",
        version=version("fraud", 2),
    )
    return ["churn", "empty", "fraud"]


def listed(response) -> list[str]:
    return re.findall(r'<a href="/models/([^/"]+)/"><strong>', response.content.decode())


def test_the_models_page_lists_models_with_latest_version_and_where_they_are_live(alice, catalogue):
    response = signed_in(alice).get("/")
    html = rows_text(response.content.decode())
    assert response.status_code == 200
    assert listed(response) == ["churn", "empty", "fraud"]
    assert "Flags fraudulent payments" in html
    assert 'href="/models/fraud/versions/2/">v2</a>' in html
    assert re.search(r'class="badge badge-env is-protected"[^>]*>production → 2</span>', html)
    assert "team: growth" in html
    assert 'aria-current="page">Models</a>' in html


def test_the_models_page_searches_names_descriptions_and_tag_values(alice, catalogue):
    client = signed_in(alice)
    assert listed(client.get("/", {"q": "FRAUD"})) == ["fraud"]
    assert listed(client.get("/", {"q": "cancels"})) == ["churn"]
    assert listed(client.get("/", {"q": "gbm"})) == ["churn"]
    assert listed(client.get("/", {"q": "team"})) == []  # a tag key is not a value
    assert "No model matches these filters." in client.get("/", {"q": "zzz"}).content.decode()


def test_the_models_page_filters_by_tag_and_by_live_environment(alice, catalogue):
    client = signed_in(alice)
    assert listed(client.get("/", {"tag": "team:risk"})) == ["fraud"]
    assert listed(client.get("/", {"env": "production"})) == ["fraud"]
    assert listed(client.get("/", {"env": "staging"})) == []
    malformed = client.get("/", {"tag": "no-colon"})
    assert malformed.status_code == 200
    assert "Tag filters look like" in malformed.content.decode()


def test_the_models_page_sorts_by_name_last_update_and_latest_version(alice, catalogue):
    client = signed_in(alice)
    RegisteredModel.objects.filter(name="empty").update(
        updated_at=timezone.now() + timedelta(hours=1)
    )
    assert listed(client.get("/", {"sort": "name"})) == ["churn", "empty", "fraud"]
    assert listed(client.get("/", {"sort": "updated"}))[0] == "empty"
    assert listed(client.get("/", {"sort": "latest"}))[0] == "fraud"
    assert listed(client.get("/", {"sort": "bogus"})) == ["churn", "empty", "fraud"]


def test_an_empty_registry_invites_a_contributor_to_create_the_first_model(alice):
    html = signed_in(alice).get("/").content.decode()
    assert "No models yet." in html
    assert "Create the first model" in html


# --- creating models --------------------------------------------------------------------


def test_a_contributor_creates_a_model_with_the_form_and_lands_on_its_page(alice):
    client = signed_in(alice)
    page = client.get("/").content.decode()
    assert '<label for="id_name">Name</label>' in page
    assert '<label for="id_description">Description</label>' in page
    assert "Create model" in page
    response = client.post("/models/new/", {"name": "spam-filter", "description": "Mail"})
    assert response.status_code == 302 and response["Location"] == "/models/spam-filter/"
    model = RegisteredModel.objects.get(name="spam-filter")
    assert model.description == "Mail" and model.created_by == alice
    assert Event.objects.filter(type="model.created", model_name="spam-filter").exists()
    assert "Model spam-filter created." in client.get("/models/spam-filter/").content.decode()


def test_a_duplicate_name_shows_the_services_message_and_creates_nothing(alice):
    make_model(alice, "fraud")
    response = signed_in(alice).post("/models/new/", {"name": "fraud", "description": "again"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Model &#x27;fraud&#x27; already exists." in html
    assert 'value="again"' in html  # the form keeps what was typed
    assert RegisteredModel.objects.filter(name="fraud").count() == 1


def test_an_invalid_name_shows_the_form_again_with_the_rule(alice):
    response = signed_in(alice).post("/models/new/", {"name": "Bad/Name"})
    assert response.status_code == 200
    assert "names cannot contain &#x27;/&#x27; or &#x27;:&#x27;" in response.content.decode()
    assert not RegisteredModel.objects.exists()


def test_the_create_page_shows_the_form_alone(alice):
    html = signed_in(alice).get("/models/new/").content.decode()
    assert "<h1>New model</h1>" in html and "Create model" in html
    assert "Filter models" not in html


def test_users_without_write_scope_neither_see_nor_use_the_create_form(bob, reader):
    for user in (bob, reader):
        client = signed_in(user)
        assert "Create model" not in client.get("/").content.decode()
        assert client.get("/models/new/").status_code == 403
        assert client.post("/models/new/", {"name": "sneaky"}).status_code == 403
    assert not RegisteredModel.objects.exists()


# --- the model page ---------------------------------------------------------------------


@pytest.fixture
def fraud_versions(alice, alice_api):
    """fraud with three versions (two ready), aliases champion → 1 and production → 2."""
    make_model(alice, "fraud", "Flags fraud", {"team": "risk"})
    ready_version(
        alice_api,
        "fraud",
        {"accuracy": 0.81, "loss": 0.5},
        {"C": "0.1"},
        {"model.bin": b"one", "README.md": b"card"},
    )
    ready_version(
        alice_api,
        "fraud",
        {"accuracy": 0.93, "loss": 0.7},
        {"C": "1.0"},
        {"model.bin": b"two", "extra.txt": b"x"},
    )
    upload_version(alice_api, "fraud", {"model.bin": b"three"}, metrics={"accuracy": 0.99})
    model = RegisteredModel.objects.get(name="fraud")
    Environment.objects.create(name="production")
    Alias.objects.create(model=model, name="champion", version=version("fraud", 1))
    Alias.objects.create(model=model, name="production", version=version("fraud", 2))
    return model


def test_the_model_page_shows_versions_aliases_metrics_and_a_chart(alice, fraud_versions):
    response = signed_in(alice).get("/models/fraud/")
    html = rows_text(response.content.decode())
    assert response.status_code == 200
    assert "<h1>fraud</h1>" in html and "Flags fraud" in html and "team: risk" in html
    for number in (1, 2, 3):
        assert f'href="/models/fraud/versions/{number}/"><strong>v{number}</strong>' in html
        assert f'name="v" value="{number}"' in html
    assert 'class="badge badge-ready">ready</span>' in html
    assert "champion → 1" in html and "production → 2" in html
    assert "0.93" in html and "loss" in html
    assert 'href="/models/fraud/upload/"' in html
    assert 'action="/models/fraud/compare/"' in html and "Compare selected" in html
    chart = html[html.index("<svg") : html.index("</svg>")]
    assert ">v1</text>" in chart and ">v2</text>" in chart
    assert ">v3</text>" not in chart  # only ready versions are drawn


def test_readers_see_the_model_page_without_the_upload_button(reader, fraud_versions):
    html = signed_in(reader).get("/models/fraud/").content.decode()
    assert "v2" in html and "Upload a new version" not in html


def test_an_unknown_model_gets_the_sites_404_page(alice):
    response = signed_in(alice).get("/models/nope/")
    assert response.status_code == 404
    html = response.content.decode()
    assert "Page not found" in html and "Back to Models" in html
    assert 'class="topbar"' in html


def test_the_metric_chart_escapes_what_it_draws():
    svg = metric_chart([("v1", 0.5), ("<v2>", 0.75)], 'acc"<script>')
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "&lt;v2&gt;" in svg
    assert metric_chart([], "accuracy") == ""
    assert "<circle" in metric_chart([("v1", 1.0)], "accuracy")  # a single point still draws


# --- compare ----------------------------------------------------------------------------


def test_compare_colours_deltas_and_highlights_changed_params_and_files(alice, fraud_versions):
    response = signed_in(alice).get("/models/fraud/compare/", {"v": ["1", "2"]})
    html = rows_text(response.content.decode())
    assert response.status_code == 200
    assert "Baseline: <strong>v1</strong>" in html
    # accuracy went up (better), loss went up (worse: lower is better)
    assert re.search(r'class="delta delta-better">\+0\.12</div>', html)
    assert re.search(r'class="delta delta-worse">\+0\.2</div>', html)
    assert '<tr class="diff-changed"> <th scope="row" class="mono">C</th>' in html
    assert 'class="diff-changed"> <th scope="row" class="mono">model.bin</th>' in html
    assert 'class="diff-added"> <th scope="row" class="mono">extra.txt</th>' in html
    assert 'class="diff-removed"> <th scope="row" class="mono">README.md</th>' in html
    assert 'href="?v=2&amp;v=1">use as baseline</a>' in html


def test_compare_with_fewer_than_two_versions_explains_what_to_do(alice, fraud_versions):
    client = signed_in(alice)
    html = client.get("/models/fraud/compare/", {"v": ["2", "99"]}).content.decode()
    assert "Pick at least two versions" in html
    assert "has no version 99" in html
    assert 'href="?v=2&amp;v=3"' in html
    assert "Pick at least two versions" in client.get("/models/fraud/compare/").content.decode()


# --- audit log --------------------------------------------------------------------------


def test_the_audit_log_lists_events_newest_first_and_filters_them(alice, admin_user):
    make_model(alice, "fraud", "one")
    make_model(alice, "churn", "two")
    registered_models.update_model(
        RegisteredModel.objects.get(name="fraud"), admin_user, description="three"
    )
    client = signed_in(alice)
    page = rows_text(client.get("/audit/").content.decode())
    assert page.index("model.updated") < page.index('href="/models/churn/"')
    assert 'aria-current="page">Audit log</a>' in page
    assert '<option value="model.created">model.created</option>' in page
    by_type = client.get("/audit/", {"type": "model.created"}).content.decode()
    assert by_type.count("<time datetime") == 2
    by_model = client.get("/audit/", {"model": "fraud"}).content.decode()
    assert by_model.count("<time datetime") == 2 and "churn" not in by_model.split("<tbody>")[1]
    by_actor = rows_text(client.get("/audit/", {"actor": "admin"}).content.decode())
    assert by_actor.count("<time datetime") == 1
    assert "before:</span> {description: one}" in by_actor


def test_the_audit_log_filters_by_a_date_range(alice):
    make_model(alice, "fraud")
    today = timezone.now().date()
    client = signed_in(alice)
    assert "model.created" in client.get("/audit/", {"since": today.isoformat()}).content.decode()
    tomorrow = (today + timedelta(days=1)).isoformat()
    assert "No event matches" in client.get("/audit/", {"since": tomorrow}).content.decode()
    yesterday = (today - timedelta(days=1)).isoformat()
    assert "No event matches" in client.get("/audit/", {"until": yesterday}).content.decode()
    bad = client.get("/audit/", {"since": "last tuesday"})
    assert bad.status_code == 200 and "must be a date" in bad.content.decode()


def test_the_audit_log_pages_fifty_events_at_a_time(alice):
    for index in range(55):
        make_model(alice, f"m{index}")
    client = signed_in(alice)
    first = client.get("/audit/").content.decode()
    assert first.count("<time datetime") == 50 and "Page 1 of 2" in first
    second = client.get("/audit/", {"page": 2}).content.decode()
    assert second.count("<time datetime") == 5


# --- tokens -----------------------------------------------------------------------------


def test_a_new_token_secret_is_shown_once_and_the_token_can_be_revoked(alice):
    client = signed_in(alice)
    page = client.get("/settings/tokens/").content.decode()
    assert 'id="scope-write"' in page and 'id="scope-admin"' not in page
    response = client.post(
        "/settings/tokens/", {"name": "workstation", "scopes": ["read", "write"], "days": "30"}
    )
    html = response.content.decode()
    secret = re.search(r'data-testid="secret">(mgt_[^<]+)</code>', html)[1]
    assert "This token will not be shown again." in html
    token = ApiToken.objects.get(user=alice, name="workstation")
    assert token.scopes == ["read", "write"]
    assert timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)
    again = client.get("/settings/tokens/").content.decode()
    assert secret not in again and "workstation" in again

    revoked = client.post(f"/settings/tokens/{token.pk}/revoke/", follow=True)
    assert "revoked" in revoked.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert "workstation" not in client.get("/settings/tokens/").content.decode()


def test_a_token_cannot_carry_scopes_beyond_the_role_or_a_bad_expiry(reader, alice):
    client = signed_in(reader)
    beyond = client.post("/settings/tokens/", {"name": "x", "scopes": ["write"], "days": "9"})
    assert "Your role does not grant: write." in beyond.content.decode()
    bad_days = client.post("/settings/tokens/", {"name": "x", "scopes": ["read"], "days": "a"})
    assert "must be a whole number" in bad_days.content.decode()
    assert not ApiToken.objects.filter(user=reader).exists()


def test_nobody_revokes_someone_elses_token(alice, bob):
    token = ApiToken.objects.create(user=bob, name="bobs", key_id="abc123", secret_hash="x")
    response = signed_in(alice).post(f"/settings/tokens/{token.pk}/revoke/", follow=True)
    assert "does not exist" in response.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is None


# --- webhooks ---------------------------------------------------------------------------


def test_webhook_pages_are_for_administrators_only(alice, bob, admin_user):
    hook = Webhook.objects.create(url="https://example.com/x", events=["*"], secret="s" * 20)
    for user in (alice, bob):
        client = signed_in(user)
        assert client.get("/settings/webhooks/").status_code == 403
        assert client.post("/settings/webhooks/", {"url": "https://e.com"}).status_code == 403
        assert client.get(f"/settings/webhooks/{hook.pk}/").status_code == 403
        denied = client.post(f"/settings/webhooks/{hook.pk}/", {"action": "delete"})
        assert denied.status_code == 403 and "Not allowed" in denied.content.decode()
    assert Webhook.objects.count() == 1


def test_an_administrator_creates_a_webhook_and_sees_its_secret_once(admin_user, settings):
    settings.MODELGATE_WEBHOOK_ALLOW_PRIVATE = True
    client = signed_in(admin_user)
    response = client.post(
        "/settings/webhooks/",
        {
            "url": "http://127.0.0.1:9/x",
            "events": ["version.ready", "promotion.promoted"],
            "other_events": "alias.deleted, ",
            "description": "CI",
        },
    )
    html = response.content.decode()
    hook = Webhook.objects.get()
    assert hook.events == ["alias.deleted", "promotion.promoted", "version.ready"]
    assert hook.secret in html and "will not be shown again" in html
    assert hook.secret not in client.get("/settings/webhooks/").content.decode()
    refused = client.post("/settings/webhooks/", {"url": "ftp://x", "events": ["*"]})
    assert "must be an http(s) URL" in refused.content.decode()
    no_events = client.post("/settings/webhooks/", {"url": "http://127.0.0.1:9/y"})
    assert "non-empty list of event types" in no_events.content.decode()
    assert Webhook.objects.count() == 1


def test_the_webhook_page_shows_deliveries_and_toggles_and_deletes(admin_user, alice):
    hook = Webhook.objects.create(url="https://example.com/x", events=["*"], secret="s" * 20)
    event = make_model(alice, "fraud").events.get()
    delivery = WebhookDelivery.objects.get(webhook=hook, event=event)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        state="failed",
        attempts=[
            {"at": "2025-01-02T03:04:05Z", "status": 502, "error": "HTTP 502", "duration_ms": 31}
        ],
    )
    client = signed_in(admin_user)
    html = rows_text(client.get(f"/settings/webhooks/{hook.pk}/").content.decode())
    assert "model.created" in html and 'class="badge badge-failed">failed</span>' in html
    assert "HTTP 502" in html and "31 ms" in html and "2025-01-02 03:04:05" in html

    client.post(f"/settings/webhooks/{hook.pk}/", {"action": "deactivate"})
    hook.refresh_from_db()
    assert hook.active is False
    client.post(f"/settings/webhooks/{hook.pk}/", {"action": "activate"})
    hook.refresh_from_db()
    assert hook.active is True
    gone = client.post(f"/settings/webhooks/{hook.pk}/", {"action": "delete"})
    assert gone.status_code == 302 and gone["Location"] == "/settings/webhooks/"
    assert not Webhook.objects.exists()


# --- environments -----------------------------------------------------------------------


def environment_form(**changes) -> dict:
    return {
        "name": "production",
        "description": "Live traffic",
        "required_approvals": "2",
        "reviewer_group": "reviewers",
        "gates": '[{"type": "metric", "metric": "accuracy", "op": ">=", "value": 0.9},'
        ' {"type": "metric_not_worse", "metric": "accuracy"}]',
        **changes,
    }


def test_an_administrator_creates_and_edits_an_environment(admin_user):
    client = signed_in(admin_user)
    created = client.post("/settings/environments/", environment_form())
    assert created.status_code == 302
    environment = Environment.objects.get(name="production")
    assert environment.required_approvals == 2 and len(environment.gates) == 2
    html = client.get("/settings/environments/").content.decode()
    assert "accuracy ≥ 0.9" in html and "not worse than live: accuracy" in html

    client.post(
        "/settings/environments/",
        environment_form(
            environment="production", required_approvals="0", allow_self_approval="on", gates="[]"
        ),
    )
    environment.refresh_from_db()
    assert environment.required_approvals == 0 and environment.allow_self_approval is True
    assert environment.gates == []

    client.post(
        "/settings/environments/",
        environment_form(environment="production", maintainer_approvals="1"),
    )
    environment.refresh_from_db()
    assert (environment.required_approvals, environment.maintainer_approvals) == (2, 1)
    html = client.get("/settings/environments/").content.decode()
    assert "2 from <strong>reviewers</strong> and 1 from the model team's maintainers" in html


def test_environment_form_errors_come_back_on_the_form(admin_user):
    client = signed_in(admin_user)
    bad_json = client.post("/settings/environments/", environment_form(gates="[{"))
    assert "Gates must be JSON" in bad_json.content.decode()
    bad_gate = client.post("/settings/environments/", environment_form(gates='[{"type": "x"}]'))
    assert "gates[0] needs a &#x27;type&#x27;" in bad_gate.content.decode()
    assert "[{&quot;type&quot;: &quot;x&quot;}]" in bad_gate.content.decode()  # kept as typed
    assert not Environment.objects.exists()


def test_non_administrators_see_environments_read_only(alice):
    Environment.objects.create(name="staging", gates=[{"type": "scan_clean"}])
    client = signed_in(alice)
    html = client.get("/settings/environments/").content.decode()
    assert "staging" in html and "artifact scan clean" in html
    assert "New environment" not in html and "Edit staging" not in html
    assert client.post("/settings/environments/", environment_form()).status_code == 403
    assert not Environment.objects.filter(name="production").exists()


# --- in a browser -----------------------------------------------------------------------


@pytest.mark.browser
def test_the_models_page_works_at_phone_width(
    page, live_server, transactional_db, alice, alice_api
):
    make_model(
        alice,
        "fraud-detector-for-card-payments",
        "Flags fraud " * 12,
        {"team": "risk", "task": "classification", "region": "europe-west"},
    )
    ready_version(alice_api, "fraud-detector-for-card-payments", {"accuracy": 0.9})
    Alias.objects.create(
        model=RegisteredModel.objects.get(), name="champion", version=ModelVersion.objects.get()
    )
    sign_in(page, live_server.url, "alice")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/")
    assert page.evaluate("getComputedStyle(document.querySelector('.topbar')).display") == "flex"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.get_by_role("link", name="New model").click()
    name = page.get_by_label("Name", exact=True)
    assert name.is_visible()
    name.fill("phone-model")
    page.get_by_label("Description").fill("Made on a phone")
    page.get_by_role("button", name="Create model").click()
    page.wait_for_url(f"{live_server.url}/models/phone-model/")
    assert page.locator("h1").inner_text() == "phone-model"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
