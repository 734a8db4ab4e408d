"""The Content-Security-Policy: every page of the web UI and the API docs is sent with it, it
admits no inline script (nor eval) and no inline style, and no page breaks it: the HTML has
no inline scripts, styles or event handlers, and Chromium, visiting every page as an
administrator over seeded data, reports no violation (tests/csp.py records them)."""

import re

import pytest
from django.test import Client
from django.urls import get_resolver
from django.urls.resolvers import URLResolver

from registry.models import Environment, ModelVersion, Promotion, Webhook
from registry.services import promotions

from . import monitoring_pages_support as support
from .conftest import sign_in, token_for, upload_version

SITE_POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "frame-ancestors": ["'none'"],
    "form-action": ["'self'"],
}
DOCS, REDOC = "/api/v1/docs/", "/api/v1/redoc/"
# The web UI's routes that are not pages: form posts, JSON polled by live.js, sign-out.
NOT_PAGES = {
    "logout",
    "version-status",
    "version-promote",
    "monitor-create",
    "monitor-update",
    "monitor-delete",
    "promotion-review",
    "promotion-status",
    "token-revoke",
    "team-change",
    "model-access",
}
CARD = "# Fraud\n\n| feature | weight |\n|:--|--:|\n| age | 0.12 |\n"


def policy(header: str) -> dict[str, list[str]]:
    parts = (part.split() for part in header.split(";") if part.strip())
    return {name: values for name, *values in parts}


def assert_strict(header: str) -> dict[str, list[str]]:
    directives = policy(header)
    assert "'unsafe-inline'" not in directives["script-src"], header
    assert "'unsafe-eval'" not in directives["script-src"], header
    assert "'unsafe-inline'" not in directives["style-src"], header
    assert "'unsafe-hashes'" not in directives["style-src"] + directives["script-src"], header
    return directives


def inline_markup(html: str) -> list[str]:
    """What a policy without 'unsafe-inline' would refuse: <script> without src (JSON data
    blocks aside), <style>, style="" and on…="" attributes, javascript: URLs."""
    tags = re.findall(r"<[a-zA-Z][^>]*>", html)
    return [
        tag
        for tag in tags
        if (tag.lower().startswith("<script") and " src=" not in tag and "json" not in tag)
        or tag.lower().startswith("<style")
        or re.search(r"""\s(style|on[a-z]+)\s*=|javascript:""", tag, re.IGNORECASE)
    ]


@pytest.fixture
def seeded(admin_user, alice, bob, alice_api, model):
    """fraud v1 live in staging with monitoring traffic and a firing alert; v2 with a model
    card, asking to go to production; a webhook; a token. Returns every page's path."""
    v1 = support.live_version(alice_api)
    now = support.send_traffic(support.ingest_client(), v1.number)
    support.drift_monitor(alice)
    support.aggregate_and_alert(now)
    number = upload_version(
        alice_api, "fraud", {"model.pkl": b"v2", "README.md": CARD.encode()}, metrics={"acc": 1}
    )
    ModelVersion.objects.filter(number=number).update(
        state="ready", scan_status="clean", package_state="ready"
    )
    Environment.objects.create(name="production", required_approvals=1, reviewer_group="reviewers")
    promotion = promotions.request_promotion(
        ModelVersion.objects.get(number=number), alice, "production", "better"
    )
    hook = Webhook.objects.create(url="https://example.com/hook", events=["*"], secret="s" * 20)
    token_for(admin_user)
    return {
        "models": ["/", "/?q=fraud"],
        "model-create": ["/models/new/"],
        "model": ["/models/fraud/"],
        "compare": [f"/models/fraud/compare/?v=1&v={number}", "/models/fraud/compare/"],
        "audit": ["/audit/"],
        "version": ["/models/fraud/versions/1/", f"/models/fraud/versions/{number}/"],
        "version-monitoring": ["/models/fraud/versions/1/monitoring/"],
        "monitoring": ["/monitoring/"],
        "environment-monitoring": ["/environments/staging/monitoring/"],
        "upload": ["/models/fraud/upload/"],
        "reviews": ["/reviews/"],
        "promotion": [f"/promotions/{promotion.pk}/"],
        "tokens": ["/settings/tokens/"],
        "webhooks": ["/settings/webhooks/"],
        "webhook": [f"/settings/webhooks/{hook.pk}/"],
        "environments": ["/settings/environments/"],
        "teams": ["/teams/"],
        "team": ["/teams/default/"],
        "docs": [DOCS],
        "redoc": [REDOC],
        "not-found": ["/models/no-such-model/"],
    }


def webui_route_names() -> set[str]:
    resolver = next(
        p for p in get_resolver().url_patterns if getattr(p, "namespace", "") == "webui"
    )
    assert isinstance(resolver, URLResolver)
    return {pattern.name for pattern in resolver.url_patterns}


def test_the_seeded_pages_are_every_page_of_the_web_ui(seeded):
    # A new page must join the list (and so these tests) or say why it is not a page.
    assert webui_route_names() - NOT_PAGES - {"login"} == set(seeded) - {
        "docs",
        "redoc",
        "not-found",
    }


def test_every_html_page_has_the_policy_and_no_inline_script_or_style(seeded, admin_user):
    admin = Client()
    admin.force_login(admin_user)
    visits = [(Client(), "/login/", 200)] + [
        (admin, path, 404 if name == "not-found" else 200)
        for name, paths in seeded.items()
        for path in paths
    ]
    for client, path, status in visits:
        response = client.get(path, follow=True)  # /monitoring/ goes on to an environment
        assert response.status_code == status, path
        assert response["Content-Type"].startswith("text/html"), path
        directives = assert_strict(response["Content-Security-Policy"])
        if path != REDOC:
            assert directives == SITE_POLICY, path
        assert inline_markup(response.content.decode()) == [], path


def test_only_redoc_gets_a_nonce_and_its_worker_and_the_api_keeps_the_site_policy(db):
    redoc = policy(Client().get(REDOC)["Content-Security-Policy"])
    nonce = [value for value in redoc["style-src"] if value.startswith("'nonce-")]
    assert len(nonce) == 1 and redoc["worker-src"] == ["'self'", "blob:"]
    assert redoc["script-src"] == ["'self'"]
    assert {**redoc, "style-src": SITE_POLICY["style-src"], "worker-src": None} == {
        **SITE_POLICY,
        "worker-src": None,
    }
    # JSON answers and Swagger UI's init script carry the site's policy too.
    for path in ("/api/v1/models/", "/healthz", f"{DOCS}?script="):
        assert policy(Client().get(path)["Content-Security-Policy"]) == SITE_POLICY, path


def test_the_inline_markup_check_finds_what_the_policy_refuses():
    refused = [
        "<script>alert(1)</script>",
        '<p style="color:red">',
        "<style>p{}</style>",
        '<button onclick="go()">',
        '<a href="javascript:go()">',
    ]
    for html in refused:
        assert inline_markup(html), html
    fine = '<script src="/static/x.js" defer></script><p class="a">on=1 style</p>'
    assert inline_markup(fine) == []


# --- in Chromium ----------------------------------------------------------------------


@pytest.mark.browser
def test_every_page_in_chromium_as_an_administrator_without_a_violation(
    page, new_context, live_server, seeded
):
    from playwright.sync_api import expect

    base = live_server.url
    headers = {}

    def visit(path: str, status: int = 200):
        response = page.goto(f"{base}{path}")
        assert response.status == status, path
        headers[path] = response.headers["content-security-policy"]
        page.wait_for_load_state("networkidle")

    visit("/login/")
    sign_in(page, base, "admin")
    for name, paths in seeded.items():
        for path in paths:
            visit(path, 404 if name == "not-found" else 200)
            if name == "docs":
                expect(page.locator(".opblock").first).to_be_visible()
            if name == "redoc":
                expect(
                    page.get_by_role("heading", name=re.compile("Modelgate API"))
                ).to_be_visible()

    # The scripts moved out of the pages still work: the one-time secret's Copy button ...
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    visit("/settings/tokens/")
    page.get_by_label("Name", exact=True).fill("laptop")
    page.get_by_role("button", name="Create token").click()
    secret = page.get_by_test_id("secret").inner_text()
    copy = page.locator("[data-copy]")
    expect(copy).to_have_text("Copy")
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    # ... and the webhook's Delete asks first: refused, nothing happens; agreed, it is gone.
    hook = Webhook.objects.get()
    visit(f"/settings/webhooks/{hook.pk}/")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Delete").click()
    page.wait_for_load_state("networkidle")
    assert page.url == f"{base}/settings/webhooks/{hook.pk}/" and Webhook.objects.exists()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    page.wait_for_url(f"{base}/settings/webhooks/")
    assert not Webhook.objects.exists()

    assert len(headers) == 1 + sum(map(len, seeded.values()))
    for header in headers.values():
        assert_strict(header)
    assert new_context.seen() == []
    assert Promotion.objects.count() == 1  # the pages only looked
