"""Monitoring pages and explanations through Django's test client: the explanations chart
on the version and review pages, the version's monitoring tab and the environment
dashboard built on ingested and aggregated traffic, and the monitor forms."""

import re

import pytest
from django.test import Client

from registry.models import Alias, Environment, ModelVersion, Monitor, Promotion
from webui.charts import importance_chart, importance_rows

from . import monitoring_pages_support as support
from .conftest import upload_version


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def features_drawn(html: str) -> list[str]:
    return re.findall(r'<g class="feature" data-feature="([^"]*)"', html)


@pytest.fixture
def live(alice_api, model) -> ModelVersion:
    return support.live_version(alice_api)


@pytest.fixture
def traffic(alice, live):
    """Five windows of traffic, the last one shifted on `age`, aggregated, with a drift
    monitor evaluated on them (so its alert fires)."""
    now = support.send_traffic(support.ingest_client(), live.number)
    support.drift_monitor(alice)
    support.drift_monitor(alice, metric="error_rate", value=0.5)  # holds no trouble
    result = support.aggregate_and_alert(now)
    assert result["windows"] == support.NORMAL_WINDOWS + 1, result
    return now


# --- explanations ------------------------------------------------------------------------


def test_version_page_draws_a_bar_with_its_spread_for_every_feature(alice, live):
    page = signed_in(alice).get(f"/models/fraud/versions/{live.number}/")
    assert page.status_code == 200
    html = page.content.decode()
    # most important first, one bar each, with a whisker for the std
    assert features_drawn(html) == ["income", "age", "plan"]
    chart = html[
        html.index('class="importance-chart"') : html.index(
            "</svg>", html.index("importance-chart")
        )
    ]
    assert chart.count('<g class="bar">') == 3
    assert chart.count("<path d=") == 3
    assert "permutation_importance" in html and "train.csv" in html and "1000 rows" in html
    assert 'data-testid="importance-table"' in html


def test_version_without_explanations_says_how_to_get_them(alice_api, alice, model):
    number = upload_version(alice_api, model, {"m.bin": b"x"})
    html = signed_in(alice).get(f"/models/fraud/versions/{number}/").content.decode()
    assert "No explanations." in html and "--explain" in html
    assert "importance-chart" not in html


def test_feature_names_in_explanations_are_escaped(alice_api, alice, model):
    hostile = '<script>alert("x")</script>'
    number = upload_version(
        alice_api,
        model,
        {"m.bin": b"x"},
        explanations={"method": "<b>shap</b>", "features": {hostile: {"importance": 0.5}}},
    )
    html = signed_in(alice).get(f"/models/fraud/versions/{number}/").content.decode()
    assert hostile not in html and "<b>shap</b>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "&lt;b&gt;shap&lt;/b&gt;" in html


def test_review_page_diffs_explanations_against_live_and_marks_the_jump(
    alice_api, alice, bob, live
):
    candidate = upload_version(
        alice_api,
        "fraud",
        {"model.pkl": b"candidate"},
        explanations=support.explanations(age=0.45, income=0.30, plan=0.05),
    )
    version = ModelVersion.objects.get(model__name="fraud", number=candidate)
    promotion = Promotion.objects.create(
        model=version.model,
        version=version,
        environment=Environment.objects.get(name="staging"),
        requested_by=alice,
    )
    html = signed_in(bob).get(f"/promotions/{promotion.pk}/").content.decode()
    assert features_drawn(html) == ["age", "income", "plan"]
    jumped = re.findall(r'data-feature="([^"]*)" data-jumped', html)
    assert jumped == ["age"]  # 0.12 -> 0.45; income moved by less than its spread
    assert html.count('<g class="bar bar-live">') == 3
    table = html[html.index('data-testid="importance-table"') :]
    age_row = table[: table.index("</tr>", table.index(">age"))]
    assert "data-jumped" in age_row and "+0.33" in age_row
    assert f"Live v{live.number}" in html


def test_importance_rows_mark_new_and_removed_features():
    rows = importance_rows(
        {"method": "m", "features": {"a": {"importance": 0.5}, "new": {"importance": 0.4}}},
        {"method": "m", "features": {"a": {"importance": 0.5}, "gone": {"importance": 0.3}}},
    )
    by_name = {row["name"]: row for row in rows}
    assert by_name["new"]["jumped"] and by_name["new"]["live"] is None
    assert by_name["gone"]["jumped"] and by_name["gone"]["importance"] is None
    assert not by_name["a"]["jumped"]
    svg = importance_chart(rows, compare=True)
    assert "not in live" in svg and "not in candidate" in svg
    assert importance_chart([]) == ""


# --- the monitoring tab ------------------------------------------------------------------


def test_monitoring_tab_shows_traffic_drift_alerts_and_live_quality(reader, live, traffic):
    page = signed_in(reader).get(f"/models/fraud/versions/{live.number}/monitoring/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-testid="requests-total">1000<' in html
    for title in (
        "Requests per window",
        "Latency (ms)",
        "Error rate",
        "Live accuracy against offline",
    ):
        assert f"<h2>{title}</h2>" in html
    assert 'data-series="offline accuracy"' in html and 'data-series="p99"' in html
    # the drift table: only the shifted feature drifted, and it is chosen first
    table = html[
        html.index('data-testid="drift-table"') : html.index("</table>", html.index("drift-table"))
    ]
    drifted = re.findall(
        r'<tr class="diff-changed" data-drifted[^>]*>\s*<td class="mono"><a [^>]*>([^<]+)<', table
    )
    assert drifted == ["age"]
    assert table.count('badge-ready">stable') == 2
    assert "chi2" in table or "chi-squared" in table or "jensen" in table.lower()
    assert "<h3>age: baseline and live</h3>" in html
    distribution = html[html.index('data-testid="feature-distribution"') :]
    distribution = distribution[: distribution.index("</svg>")]
    assert distribution.count('class="bar bar-baseline"') == 10
    assert distribution.count('class="bar bar-live"') == 10
    # the drift monitor fired once, the error-rate one did not
    firing = html[
        html.index('data-testid="firing-table"') : html.index(
            "</table>", html.index("firing-table")
        )
    ]
    assert "drift.psi.max &gt; 0.2" in firing and "(age)" in firing
    assert "error_rate" not in firing
    # a reader sees the monitors but no forms
    assert 'data-testid="monitors"' in html and 'data-testid="monitor-create"' not in html


def test_a_chosen_feature_draws_its_categories_and_odd_input_is_harmless(alice, live, traffic):
    client = signed_in(alice)
    url = f"/models/fraud/versions/{live.number}/monitoring/"
    html = client.get(url, {"feature": "plan"}).content.decode()
    assert "<h3>plan: baseline and live</h3>" in html
    assert html.count('class="bar bar-baseline"') >= 3
    for query in ({"feature": "<script>x</script>"}, {"hours": "nope"}, {"environment": "x'"}):
        answer = client.get(url, query)
        assert answer.status_code == 200
        assert "<script>x</script>" not in answer.content.decode()


def test_environment_dashboard_lists_live_models_with_drift_and_alerts(bob, live, traffic):
    page = signed_in(bob).get("/environments/staging/monitoring/")
    assert page.status_code == 200
    html = page.content.decode()
    overview = html[html.index('data-testid="overview"') :]
    assert f"/models/fraud/versions/{live.number}/monitoring/?environment=staging" in overview
    assert '<span class="badge badge-error mono">age</span>' in overview
    assert "income</span>" not in overview
    firing = html[html.index('data-testid="firing-table"') :]
    assert "drift.psi.max" in firing[: firing.index("</table>")]
    assert signed_in(bob).get("/monitoring/").url == "/environments/staging/monitoring/"
    assert signed_in(bob).get("/environments/nowhere/monitoring/").status_code == 404


def test_pages_without_traffic_explain_what_is_missing(alice, alice_api, model):
    number = upload_version(alice_api, model, {"m.bin": b"x"})
    Environment.objects.create(name="production")
    html = signed_in(alice).get(f"/models/fraud/versions/{number}/monitoring/").content.decode()
    assert "No traffic yet" in html and "has no baseline" in html
    html = signed_in(alice).get("/environments/production/monitoring/").content.decode()
    assert "No model is live in production yet." in html and "Nothing is firing." in html


def test_monitoring_pages_need_sign_in(live):
    for url in (
        f"/models/fraud/versions/{live.number}/monitoring/",
        "/environments/staging/monitoring/",
        "/monitoring/",
    ):
        answer = Client().get(url)
        assert answer.status_code == 302 and answer.url.startswith("/login/")
    assert Client().post("/models/fraud/monitors/", {}).status_code == 302
    assert not Monitor.objects.exists()


# --- monitor forms -----------------------------------------------------------------------


def test_contributor_adds_edits_and_deletes_a_monitor(alice, live):
    client = signed_in(alice)
    back = f"/models/fraud/versions/{live.number}/monitoring/"
    html = client.get(back).content.decode()
    assert 'data-testid="monitor-create"' in html
    form = {
        "next": back,
        "environment": "staging",
        "metric": "latency_ms.p95",
        "op": ">",
        "value": "200",
        "window": "600",
        "min_samples": "100",
    }
    answer = client.post("/models/fraud/monitors/", form)
    assert answer.status_code == 302 and answer.url == back
    monitor = Monitor.objects.get()
    assert (monitor.metric, monitor.op, monitor.value, monitor.window_seconds) == (
        "latency_ms.p95",
        ">",
        200.0,
        600,
    )
    assert monitor.created_by == alice
    edit = {**form, "value": "150", "enabled_present": "1"}  # unchecked box: disabled
    client.post(f"/monitors/{monitor.pk}/", edit)
    monitor.refresh_from_db()
    assert monitor.value == 150.0 and monitor.enabled is False
    page = client.get(back).content.decode()
    assert "latency_ms.p95 &gt; 150" in page and "disabled" in page
    client.post(f"/monitors/{monitor.pk}/delete/", {"next": back})
    assert not Monitor.objects.exists()


def test_bad_monitor_forms_are_a_message_and_store_nothing(alice, live):
    client = signed_in(alice)
    base = {"environment": "staging", "metric": "error_rate", "op": ">", "window": "300"}
    for bad in (
        {"value": "lots"},
        {"value": "0.1", "metric": "nope"},
        {"value": "0.1", "window": "7"},
        {"value": "nan"},
    ):
        answer = client.post("/models/fraud/monitors/", {**base, **bad}, follow=True)
        assert answer.status_code == 200
        assert b'class="message error"' in answer.content, bad
    assert not Monitor.objects.exists()
    # an open redirect through `next` is refused
    answer = client.post(
        "/models/fraud/monitors/", {**base, "value": "0.1", "next": "https://evil.example/"}
    )
    assert answer.url == "/models/fraud/"


def test_only_contributors_may_change_monitors(alice, reader, bob, live):
    monitor = support.drift_monitor(alice)
    for user in (reader, bob):
        client = signed_in(user)
        form = {"environment": "staging", "metric": "error_rate", "op": ">", "value": "0.1"}
        assert client.post("/models/fraud/monitors/", form).status_code == 403
        assert client.post(f"/monitors/{monitor.pk}/", {"value": "9"}).status_code == 403
        assert client.post(f"/monitors/{monitor.pk}/delete/").status_code == 403
        assert client.get(f"/monitors/{monitor.pk}/delete/").status_code == 405
    monitor.refresh_from_db()
    assert Monitor.objects.count() == 1 and monitor.value == 0.2
    assert signed_in(alice).post("/monitors/999999/delete/").status_code == 404
    assert Alias.objects.filter(name="staging").exists()
