"""The monitoring tab in Chromium against a live server: traffic is POSTed over HTTP with
an ingest token, shifted on one feature, rolled up by the real aggregation and checked by
the real monitors; the page then shows the firing alert and the drifted feature."""

import re

import httpx

from registry.models import Alert

from . import monitoring_pages_support as support
from .conftest import sign_in


def test_monitoring_tab_shows_the_alert_and_the_drifted_feature(
    page, live_server, alice, reader, alice_api, model
):
    base = live_server.url
    version = support.live_version(alice_api)
    token = httpx.post(f"{base}/api/v1/auth/tokens/", json=support.token_request(), timeout=30)
    assert token.status_code == 201, token.text
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {token.json()['token']}"}, timeout=60
    ) as http:
        now = support.send_traffic(lambda path, body: http.post(path, json=body), version.number)
    support.drift_monitor(alice)
    support.aggregate_and_alert(now)
    assert Alert.objects.filter(state="firing").count() == 1

    sign_in(page, base, "reader")
    page.goto(f"{base}/models/fraud/versions/{version.number}/")
    # the explanations chart: one bar group per feature
    assert page.locator("[data-testid=importance-chart] g.feature").count() == 3
    page.get_by_role("navigation", name="Version").get_by_role("link", name="Monitoring").click()
    page.wait_for_url(re.compile(r"/monitoring/"))

    firing = page.get_by_test_id("firing-alerts")
    firing.wait_for()
    assert "drift.psi.max > 0.2" in firing.inner_text()
    assert "firing" in firing.inner_text()
    drifted = page.locator("[data-testid=drift-table] tr[data-drifted]")
    assert drifted.count() == 1
    assert drifted.locator("td").first.inner_text().strip() == "age"
    assert "drifted" in drifted.inner_text()
    assert page.get_by_role("heading", name="age: baseline and live").is_visible()
    assert page.locator("[data-testid=feature-distribution] svg").is_visible()

    # choosing another feature draws its distributions instead
    page.locator("[data-testid=drift-table]").get_by_role("link", name="plan").click()
    page.get_by_role("heading", name="plan: baseline and live").wait_for()
    assert "stable" in page.locator("[data-testid=drift-table] tr[aria-current=true]").inner_text()
