"""The upload, version, review and promotion pages, in Chromium against a live server
and a real worker, plus the same views through Django's test client."""

import hashlib
import json
import os
import re
from pathlib import Path

import httpx
import joblib
import pytest
from django.test import Client
from sklearn.linear_model import LogisticRegression

from registry.models import (
    Alias,
    Environment,
    Event,
    ModelVersion,
    Promotion,
    RegisteredModel,
    Review,
    VersionFile,
)
from registry.services import promotions, registered_models
from webui.markdown import render_model_card

from .conftest import sha256_of, sign_in, token_for, upload_version, wait_for

MIB = 1024 * 1024
CHUNK = 8 * MIB
BIG = 50 * 1024 * 1024 + 12_345  # seven chunks, the last one short
PRODUCTION_GATES = [{"type": "scan_clean"}, {"type": "package_ready"}]


def production() -> Environment:
    return Environment.objects.create(
        name="production",
        required_approvals=1,
        reviewer_group="reviewers",
        gates=PRODUCTION_GATES,
    )


def model_folder(root: Path, big: int = BIG) -> Path:
    """A trained scikit-learn model as a data scientist's folder, with one large file."""
    folder = root / "fraud-model"
    folder.mkdir()
    estimator = LogisticRegression().fit([[0, 0], [1, 1], [0, 1], [1, 0]], [0, 1, 1, 0])
    joblib.dump(estimator, folder / "model.joblib")
    (folder / "README.md").write_text("# Fraud\n\nFlags fraudulent payments.\n")
    (folder / "requirements.txt").write_text("scikit-learn\njoblib\n")
    with open(folder / "weights.bin", "wb") as out:
        for _ in range(big // MIB):
            out.write(os.urandom(MIB))
        out.write(os.urandom(big % MIB))
    return folder


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def downloaded_sha256(base_url: str, token: str, model: str, number: int, path: str) -> str:
    digest = hashlib.sha256()
    url = f"{base_url}/api/v1/models/{model}/versions/{number}/files/{path}"
    with httpx.stream("GET", url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as r:
        assert r.status_code == 200, r.read()
        for block in r.iter_bytes():
            digest.update(block)
    return digest.hexdigest()


def open_upload_page(page, base_url: str, model: str = "fraud") -> None:
    page.goto(f"{base_url}/models/{model}/upload/")
    page.get_by_role("heading", name=f"Upload a new version of {model}").wait_for()


def expect():
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


# --- the whole path in a browser ----------------------------------------------------------


@pytest.mark.browser
def test_a_data_scientist_uploads_and_a_reviewer_promotes_through_the_browser(
    new_context, page, live_server, celery_worker, alice, bob, tmp_path
):
    production()
    folder = model_folder(tmp_path)
    base = live_server.url

    sign_in(page, base, "alice")
    page.goto(f"{base}/")
    page.get_by_label("Name", exact=True).fill("fraud")
    page.get_by_role("button", name="Create model").click()
    page.wait_for_url(f"{base}/models/fraud/")
    page.get_by_role("link", name="Upload a new version").click()
    page.wait_for_url(f"{base}/models/fraud/upload/")

    # A whole folder: its own name is not part of the paths in the version.
    page.locator("#folder-input").set_input_files(folder)
    expect()(page.locator("#file-summary")).to_contain_text("4 files")
    page.get_by_label("Metric name", exact=True).first.fill("accuracy")
    page.get_by_label("Metric value", exact=True).first.fill("0.91")
    page.get_by_label("Code commit").fill("3f2c1ab")
    page.get_by_role("button", name="Upload", exact=True).click()

    page.wait_for_url(f"{base}/models/fraud/versions/1/", timeout=120_000)
    expect()(page.get_by_test_id("version-state")).to_have_text("ready", timeout=120_000)
    version = ModelVersion.objects.get(model__name="fraud", number=1)
    assert version.metrics == {"accuracy": 0.91}
    assert version.lineage == {"code_commit": "3f2c1ab"}
    assert sorted(version.files.values_list("path", flat=True)) == [
        "README.md",
        "model.joblib",
        "requirements.txt",
        "weights.bin",
    ]
    assert version.files.get(path="weights.bin").sha256 == file_sha256(folder / "weights.bin")
    expect()(page.get_by_test_id("scan-status")).to_have_text("clean")
    expect()(page.get_by_test_id("model-card")).to_contain_text("Flags fraudulent payments.")
    assert page.get_by_role("link", name="Download package").is_visible()

    page.get_by_label("Environment").select_option("production")
    page.get_by_label("Comment").fill("Better recall on last month's fraud.")
    page.get_by_role("button", name="Request promotion").click()
    page.wait_for_url(re.compile(r".*/promotions/\d+/$"))
    expect()(page.get_by_test_id("promotion-state")).to_have_text("pending")
    expect()(page.get_by_test_id("requester-note")).to_be_visible()
    assert page.get_by_role("button", name="Approve").count() == 0

    reviewer = new_context()
    try:
        bob_page = reviewer.new_page()
        sign_in(bob_page, base, "bob")
        expect()(bob_page.get_by_test_id("review-count")).to_have_text("1")
        bob_page.get_by_role("link", name="Reviews").click()
        bob_page.wait_for_url(f"{base}/reviews/")
        queue = bob_page.get_by_test_id("review-queue")
        expect()(queue).to_contain_text("fraud")
        expect()(queue).to_contain_text("all 2 passed")
        bob_page.get_by_role("link", name="Review", exact=True).click()
        bob_page.wait_for_url(re.compile(r".*/promotions/\d+/$"))
        expect()(bob_page.locator("body")).to_contain_text("Better recall on last month's fraud.")
        expect()(bob_page.locator("body")).to_contain_text("Nothing is live in production")
        expect()(bob_page.locator(".wf-compare").first).to_contain_text("accuracy")
        bob_page.get_by_label("Comment").fill("Scan clean, package built, metrics fine.")
        bob_page.get_by_role("button", name="Approve").click()
        expect()(bob_page.get_by_test_id("promotion-state")).to_have_text(
            "promoted", timeout=60_000
        )
        bob_page.goto(f"{base}/models/fraud/versions/1/")
        expect()(bob_page.locator("h1 .badge-env", has_text="production")).to_be_visible()
    finally:
        reviewer.close()

    alias = Alias.objects.get(model__name="fraud", name="production")
    assert alias.version.number == 1
    promotion = Promotion.objects.get()
    assert promotion.state == "promoted"
    assert [(r.reviewer_name, r.decision) for r in promotion.reviews.all()] == [("bob", "approve")]


# --- resuming uploads ---------------------------------------------------------------------


def _chunk_start(request) -> int | None:
    match = re.match(r"bytes (\d+)-", request.headers.get("content-range", ""))
    return int(match.group(1)) if match else None


@pytest.mark.browser
def test_an_interrupted_chunked_upload_resumes_and_completes_byte_identical(
    page, live_server, celery_worker, alice, tmp_path
):
    registered_models.create_model(alice, "fraud")
    folder = model_folder(tmp_path)
    base = live_server.url
    broken = {"aborted": 0, "unavailable": 0}
    methods = []
    page.on(
        "request",
        lambda r: methods.append((r.method, _chunk_start(r))) if "weights.bin" in r.url else None,
    )

    def flaky(route, request):
        start = _chunk_start(request)
        if request.method == "PUT" and start == CHUNK and not broken["aborted"]:
            broken["aborted"] += 1
            return route.abort("connectionreset")  # the connection drops mid-chunk
        if request.method == "PUT" and start == 2 * CHUNK and not broken["unavailable"]:
            broken["unavailable"] += 1
            return route.fulfill(status=503, body="Service Unavailable")
        return route.continue_()

    sign_in(page, base, "alice")
    page.route("**/api/v1/models/fraud/versions/*/files/weights.bin", flaky)
    open_upload_page(page, base)
    paths = sorted(folder.iterdir())
    page.locator("#files-input").set_input_files(paths)
    page.get_by_role("button", name="Upload", exact=True).click()
    page.wait_for_url(f"{base}/models/fraud/versions/1/", timeout=120_000)

    assert broken == {"aborted": 1, "unavailable": 1}
    puts = [start for method, start in methods if method == "PUT" and start is not None]
    # Each refused chunk is sent again after a HEAD that says where to continue.
    assert puts.count(CHUNK) == 2 and puts.count(2 * CHUNK) == 2
    assert puts.count(0) == 1
    assert ("HEAD", None) in methods
    token = token_for(alice)
    for path in paths:
        assert downloaded_sha256(base, token, "fraud", 1, path.name) == file_sha256(path)
    expect()(page.get_by_test_id("version-state")).to_have_text("ready", timeout=120_000)


@pytest.mark.browser
def test_a_reloaded_upload_resumes_when_the_same_files_are_chosen_again(
    page, live_server, celery_worker, alice, tmp_path
):
    registered_models.create_model(alice, "fraud")
    folder = model_folder(tmp_path)
    base = live_server.url
    pattern = "**/api/v1/models/fraud/versions/*/files/weights.bin"
    seen = []
    page.on("request", lambda r: seen.append((r.method, r.url, _chunk_start(r))))

    network = {"down": False, "restored": False}

    def offline_after_two_chunks(route, request):
        start = _chunk_start(request)
        if request.method == "PUT" and start is not None and start >= 2 * CHUNK:
            network["down"] = True
        if network["down"] and not network["restored"]:
            return route.abort("internetdisconnected")
        return route.continue_()

    sign_in(page, base, "alice")
    page.route(pattern, offline_after_two_chunks)
    open_upload_page(page, base)
    paths = sorted(folder.iterdir())
    page.locator("#files-input").set_input_files(paths)
    page.get_by_label("Metric name", exact=True).first.fill("accuracy")
    page.get_by_label("Metric value", exact=True).first.fill("0.9")
    # The connection goes after two chunks: the page retries, asking the server where to
    # go on from (Playwright runs route handlers only while the test waits through it) ...
    with page.expect_request(
        lambda r: r.method == "HEAD" and r.url.endswith("weights.bin"), timeout=60_000
    ):
        page.get_by_role("button", name="Upload", exact=True).click()
    assert VersionFile.objects.get(path="weights.bin").received == 2 * CHUNK
    # ... and the person gives up and reloads the page.
    page.reload()
    seen.clear()
    network["restored"] = True

    expect()(page.get_by_role("heading", name="Resume upload of version 1")).to_be_visible()
    expect()(page.get_by_role("button", name="Resume upload")).to_be_disabled()
    page.locator("#resume-files-input").set_input_files(paths[:2])
    expect()(page.locator("#resume-match")).to_contain_text("weights.bin")
    page.locator("#resume-files-input").set_input_files(paths)
    page.get_by_role("button", name="Resume upload").click()
    page.wait_for_url(f"{base}/models/fraud/versions/1/", timeout=120_000)

    big_puts = [s for m, u, s in seen if m == "PUT" and u.endswith("weights.bin")]
    assert big_puts[0] == 2 * CHUNK  # continued where it stopped, not from the start
    assert 0 not in big_puts
    assert not [u for m, u, _ in seen if m == "PUT" and not u.endswith("weights.bin")]
    assert page.evaluate("localStorage.getItem('modelgate.upload.fraud')") is None
    token = token_for(alice)
    assert downloaded_sha256(base, token, "fraud", 1, "weights.bin") == file_sha256(
        folder / "weights.bin"
    )
    assert ModelVersion.objects.get().metrics == {"accuracy": 0.9}


@pytest.mark.browser
def test_upload_errors_from_the_server_are_shown_and_nothing_becomes_a_version(
    page, live_server, alice, tmp_path
):
    registered_models.create_model(alice, "fraud")
    base = live_server.url
    sign_in(page, base, "alice")
    open_upload_page(page, base)

    page.get_by_role("button", name="Upload", exact=True).click()
    expect()(page.get_by_role("alert")).to_have_text(
        "Choose at least one file or a folder to upload."
    )

    (tmp_path / "model.bin").write_bytes(b"weights")
    page.locator("#files-input").set_input_files(tmp_path / "model.bin")
    page.get_by_label("Metric name", exact=True).first.fill("accuracy")
    page.get_by_label("Metric value", exact=True).first.fill("high")
    page.get_by_role("button", name="Upload", exact=True).click()
    expect()(page.get_by_role("alert")).to_contain_text("must be a number")

    # The server refuses a file whose bytes differ from what was declared.
    page.get_by_label("Metric value", exact=True).first.fill("0.9")
    page.route(
        "**/api/v1/models/fraud/versions/*/files/model.bin",
        lambda route, request: (
            route.continue_(post_data=b"WEIGHTS") if request.method == "PUT" else route.continue_()
        ),
    )
    page.get_by_role("button", name="Upload", exact=True).click()
    expect()(page.get_by_role("alert")).to_contain_text(
        "The file changed or was corrupted on the way: model.bin"
    )
    version = ModelVersion.objects.get()
    assert version.state == "uploading"
    assert not version.files.get().complete
    expect()(page.get_by_role("button", name="Retry")).to_be_visible()


# --- review rules in the browser --------------------------------------------------------


@pytest.mark.browser
def test_the_requester_sees_no_approve_button_and_a_forged_approval_is_refused(
    page, live_server, celery_worker, alice, bob, alice_api
):
    production()
    registered_models.create_model(alice, "fraud")
    number = upload_version(alice_api, "fraud", {"model.bin": b"weights"}, metrics={"auc": 0.8})
    wait_for(lambda: ModelVersion.objects.get(number=number).state == "ready", 60)
    base = live_server.url

    sign_in(page, base, "alice")
    page.goto(f"{base}/models/fraud/versions/{number}/")
    page.get_by_label("Environment").select_option("production")
    page.get_by_role("button", name="Request promotion").click()
    page.wait_for_url(re.compile(r".*/promotions/\d+/$"))
    promotion = Promotion.objects.get()
    assert promotion.requested_by == alice and promotion.state == "pending"
    expect()(page.get_by_test_id("requester-note")).to_have_text(
        "You requested this promotion; a reviewer decides."
    )
    assert page.get_by_role("button", name="Approve").count() == 0
    assert page.get_by_role("button", name="Reject").count() == 0

    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    review_url = f"{base}/promotions/{promotion.pk}/"
    response = page.request.post(
        f"{review_url}review/",
        form={"csrfmiddlewaretoken": csrf, "decision": "approve", "comment": "ship it"},
        headers={"Referer": review_url},
    )
    assert response.status == 403
    promotion.refresh_from_db()
    assert promotion.state == "pending"
    assert not promotion.reviews.exists()


@pytest.mark.browser
def test_a_model_card_with_script_renders_without_running_it(
    page, live_server, celery_worker, alice, alice_api
):
    registered_models.create_model(alice, "fraud")
    card = (
        "# Fraud\n\n<script>window.__pwned = 1</script>\n\n"
        '<img src=x onerror="window.__pwned = 2">\n\n'
        "[click me](javascript:alert(1)) and [docs](https://example.com/docs)\n"
    )
    number = upload_version(
        alice_api, "fraud", {"README.md": card.encode(), "model.bin": b"weights"}
    )
    wait_for(lambda: ModelVersion.objects.get(number=number).state == "ready", 60)
    assert ModelVersion.objects.get(number=number).model_card == card
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    sign_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/models/fraud/versions/{number}/")
    container = page.get_by_test_id("model-card")
    expect()(container).to_contain_text("Fraud")
    container.get_by_text("click me").click()  # its javascript: target was removed
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert dialogs == []
    assert container.locator("script, img, iframe").count() == 0
    assert page.locator("[onerror]").count() == 0
    hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
    assert not [h for h in hrefs if h.strip().lower().startswith("javascript:")]
    assert container.get_by_role("link", name="docs").get_attribute("rel") == (
        "noopener noreferrer nofollow"
    )


@pytest.mark.browser
def test_the_browser_sha256_matches_hashlib(page, live_server, alice):
    registered_models.create_model(alice, "fraud")
    sign_in(page, live_server.url, "alice")
    open_upload_page(page, live_server.url)
    samples = [b"", b"abc", b"a" * 55, b"b" * 56, b"c" * 64, b"d" * 65, bytes(range(256)) * 41]
    for data in samples:
        got = page.evaluate(
            """([bytes, cut]) => {
                const h = new window.ModelgateSha256();
                const all = new Uint8Array(bytes);
                h.update(all.subarray(0, cut));
                h.update(all.subarray(cut));
                return h.hex();
            }""",
            [list(data), len(data) // 3],
        )
        assert got == sha256_of(data)


@pytest.mark.browser
def test_files_dropped_on_the_drop_zone_are_listed_and_can_be_removed(page, live_server, alice):
    registered_models.create_model(alice, "fraud")
    sign_in(page, live_server.url, "alice")
    open_upload_page(page, live_server.url)
    page.eval_on_selector(
        "#dropzone",
        """zone => {
            const dropped = new DataTransfer();
            dropped.items.add(new File(["weights"], "model.bin"));
            dropped.items.add(new File(["# Card"], "README.md"));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: dropped, bubbles: true}));
        }""",
    )
    expect()(page.locator("#file-summary")).to_have_text("2 files, 13 bytes")
    expect()(page.locator("#file-list tbody")).to_contain_text("README.md")
    page.get_by_role("button", name="Remove README.md").click()
    expect()(page.locator("#file-summary")).to_have_text("1 file, 7 bytes")


@pytest.mark.browser
def test_metadata_can_be_pasted_as_json_and_edited_as_rows(
    page, live_server, celery_worker, alice, tmp_path
):
    registered_models.create_model(alice, "fraud")
    (tmp_path / "model.bin").write_bytes(b"weights")
    sign_in(page, live_server.url, "alice")
    open_upload_page(page, live_server.url)
    page.locator("#files-input").set_input_files(tmp_path / "model.bin")
    page.get_by_text("Paste or load metrics as JSON").click()
    page.get_by_label("Metrics JSON", exact=True).fill('{"accuracy": 0.91, "f1": 0.5}')
    page.get_by_role("button", name="Use this JSON").first.click()
    expect()(page.get_by_label("Metric name", exact=True)).to_have_count(2)
    page.get_by_label("Metric value", exact=True).nth(1).fill("0.88")
    page.get_by_text("Paste or load parameters as JSON").click()
    page.get_by_label("Parameters JSON", exact=True).fill('{"C": 1.5, "solver": "lbfgs"}')
    page.get_by_role("button", name="Use this JSON").nth(1).click()
    page.get_by_role("button", name="Add tag").click()
    page.get_by_label("Tag name", exact=True).first.fill("team")
    page.get_by_label("Tag value", exact=True).first.fill("risk")
    page.get_by_label("Description").fill("Pasted metadata")
    page.get_by_role("button", name="Upload", exact=True).click()
    page.wait_for_url(f"{live_server.url}/models/fraud/versions/1/")
    version = ModelVersion.objects.get()
    assert version.metrics == {"accuracy": 0.91, "f1": 0.88}
    assert version.params == {"C": "1.5", "solver": "lbfgs"}
    assert version.tags == {"team": "risk"}
    assert version.description == "Pasted metadata"


# --- the model card renderer ------------------------------------------------------------


def markup_of(html: str) -> list[tuple[str, list]]:
    """Every element an HTML parser finds, with its attributes."""
    from html.parser import HTMLParser

    found = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, attrs))

    Collect().feed(html)
    return found


def test_the_model_card_renderer_keeps_markdown_and_drops_anything_executable():
    html = str(
        render_model_card(
            "# Title\n\nSome **bold** and `code`.\n\n"
            "<script>alert(1)</script>\n\n"
            '<img src="javascript:alert(1)" onerror="alert(2)">\n\n'
            '<iframe src="https://evil.example"></iframe>\n\n'
            '<a href="javascript:alert(3)" onclick="x()">raw</a> <b style="color:red">b</b>\n\n'
            "[js](javascript:alert(4)) [JS](JaVaScRiPt:alert(5)) [data](data:text/html,hi)\n"
            "[web](https://example.com) [mail](mailto:team@example.com)\n\n"
            "| a | b |\n|---|---|\n| 1 | 2 |\n\n"
            "```\nprint('<b>')\n```\n"
        )
    )
    assert "<h1>Title</h1>" in html
    assert "<strong>bold</strong>" in html and "<code>code</code>" in html
    assert "<table>" in html and "<td>1</td>" in html
    assert '<a href="https://example.com" rel="noopener noreferrer nofollow">web</a>' in html
    assert 'href="mailto:team@example.com"' in html
    assert "&lt;script&gt;" in html  # raw HTML is shown as text, not interpreted
    elements = markup_of(html)
    tags = {tag for tag, _ in elements}
    assert tags <= {
        "h1",
        "p",
        "strong",
        "code",
        "pre",
        "a",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
    }
    attributes = {name for _, attrs in elements for name, _ in attrs}
    assert attributes <= {"href", "rel"}
    hrefs = [value for _, attrs in elements for name, value in attrs if name == "href"]
    assert hrefs == ["https://example.com", "mailto:team@example.com"]
    assert str(render_model_card("")) == ""


# --- the same views through Django's test client -------------------------------------------


def signed_in(user, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def make_version(model: RegisteredModel, user, number: int, **fields) -> ModelVersion:
    """A version as the worker would leave it; written directly, as test data."""
    fields.setdefault("state", "ready")
    version = ModelVersion.objects.create(model=model, number=number, created_by=user, **fields)
    VersionFile.objects.create(
        version=version,
        path="model.bin",
        size=7,
        sha256=sha256_of(f"{number}".encode() * 7),
        received=7,
        complete=True,
    )
    RegisteredModel.objects.filter(pk=model.pk).update(last_version_number=number)
    return version


@pytest.fixture
def fraud(alice):
    model = registered_models.create_model(alice, "fraud")
    make_version(
        model,
        alice,
        1,
        metrics={"accuracy": 0.8},
        params={"C": "1"},
        scan_status="clean",
        package_state="ready",
    )
    make_version(
        model,
        alice,
        2,
        metrics={"accuracy": 0.9},
        params={"C": "10"},
        scan_status="clean",
        package_state="ready",
    )
    return model


def test_version_status_reports_state_pipeline_scan_and_package(alice, fraud):
    ModelVersion.objects.filter(number=2).update(
        state="processing", pipeline={"verify": "done", "scan": "running"}, scan_status=""
    )
    response = signed_in(alice).get("/models/fraud/versions/2/status/")
    assert response.status_code == 200
    assert response.json() == {
        "state": "processing",
        "status_reason": "",
        "pipeline": {
            "verify": "done",
            "scan": "running",
            "extract": "pending",
            "package": "pending",
        },
        "scan": {"status": ""},
        "package": {"state": "ready"},
    }
    page = signed_in(alice).get("/models/fraud/versions/2/").content.decode()
    assert 'data-live-url="/models/fraud/versions/2/status/"' in page
    assert re.findall(r'<li class="step-(\w+)" data-step="(\w+)">', page) == [
        ("done", "verify"),
        ("running", "scan"),
        ("pending", "extract"),
        ("pending", "package"),
    ]
    assert "webui/live.js" in page
    assert signed_in(alice).get("/models/fraud/versions/9/status/").status_code == 404
    anonymous = Client().get("/models/fraud/versions/2/status/")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/")


def test_the_version_page_shows_files_scan_metadata_and_the_timeline(alice, fraud):
    production()
    ModelVersion.objects.filter(number=2).update(
        scan_status="unverified",
        scan_findings=[
            {
                "file": "model.bin",
                "member": "",
                "offset": 12,
                "module": "mylib",
                "name": "Thing",
                "severity": "unverified",
                "detail": "not on the allow-list",
            }
        ],
        lineage={"code_commit": "abc123", "run_url": "javascript:alert(1)"},
        signature={"inputs": [{"name": "amount", "type": "double"}], "outputs": []},
    )
    response = signed_in(alice).get("/models/fraud/versions/2/")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'href="/api/v1/models/fraud/versions/2/files/model.bin"' in html
    assert 'href="/api/v1/models/fraud/versions/2/package/"' in html
    assert "mylib.Thing" in html and "not on the allow-list" in html
    assert "abc123" in html and "amount" in html
    assert 'href="javascript' not in html  # a lineage URL is a link only when http(s)
    assert "Request promotion" in html and '<option value="production">' in html
    assert "version.created" not in html  # written directly above, so no events
    promotions.request_promotion(ModelVersion.objects.get(number=2), alice, "production")
    html = signed_in(alice).get("/models/fraud/versions/2/").content.decode()
    assert "promotion.requested" in html and 'href="/promotions/' in html
    assert signed_in(alice).get("/models/fraud/versions/7/").status_code == 404


def test_readers_see_no_promotion_form_and_may_not_open_the_upload_page(reader, alice, fraud):
    assert (
        "Request promotion"
        not in signed_in(reader).get("/models/fraud/versions/2/").content.decode()
    )
    assert signed_in(reader).get("/models/fraud/upload/").status_code == 403
    assert signed_in(alice).get("/models/fraud/upload/").status_code == 200
    assert signed_in(alice).get("/models/nothing/upload/").status_code == 404


def test_requesting_a_promotion_reports_service_errors_as_messages(alice, fraud):
    production()
    client = signed_in(alice)
    ModelVersion.objects.filter(number=1).update(state="processing")
    response = client.post(
        "/models/fraud/versions/1/promote/", {"environment": "production"}, follow=True
    )
    assert response.redirect_chain[-1][0] == "/models/fraud/versions/1/"
    assert "only a ready version can be promoted" in response.content.decode()
    response = client.post(
        "/models/fraud/versions/2/promote/", {"environment": "nowhere"}, follow=True
    )
    assert "Environment &#x27;nowhere&#x27; does not exist." in response.content.decode()
    assert not Promotion.objects.exists()


def test_a_blocked_request_lands_on_its_page_saying_why(alice, fraud):
    production()
    ModelVersion.objects.filter(number=2).update(package_state="none")
    response = signed_in(alice).post(
        "/models/fraud/versions/2/promote/",
        {"environment": "production", "comment": "please"},
        follow=True,
    )
    promotion = Promotion.objects.get()
    assert response.redirect_chain[-1][0] == f"/promotions/{promotion.pk}/"
    assert promotion.state == "blocked"
    html = response.content.decode()
    assert "package_ready: package is none" in html
    assert 'data-testid="promotion-state" data-live-badge>blocked<' in html


def test_the_queue_shows_each_user_what_they_may_decide(alice, bob, carol, admin_user, fraud):
    from django.contrib.auth.models import Group

    prod = production()
    leads = Environment.objects.create(name="ml-leads", reviewer_group="leads")
    lab = Environment.objects.create(
        name="lab", reviewer_group="lab-crew", allow_self_approval=True
    )
    alice.groups.add(Group.objects.get_or_create(name="lab-crew")[0])
    v1, v2 = ModelVersion.objects.order_by("number")
    to_prod = Promotion.objects.create(
        model=fraud, version=v2, environment=prod, requested_by=alice
    )
    to_leads = Promotion.objects.create(
        model=fraud, version=v2, environment=leads, requested_by=alice
    )
    to_lab = Promotion.objects.create(model=fraud, version=v1, environment=lab, requested_by=alice)
    Promotion.objects.create(
        model=fraud, version=v1, environment=prod, requested_by=alice, state="rejected"
    )
    Review.objects.create(
        promotion=to_prod, reviewer=carol, reviewer_name="carol", decision="approve", comment="fine"
    )

    def waiting(user) -> set[int]:
        response = signed_in(user).get("/reviews/")
        assert response.status_code == 200
        return {row["promotion"].pk for row in response.context["waiting"]}

    assert waiting(bob) == {to_prod.pk}
    assert waiting(carol) == set()  # already reviewed it
    assert waiting(alice) == {to_lab.pk}  # her own, where the policy allows it
    assert waiting(admin_user) == {to_prod.pk, to_leads.pk, to_lab.pk}
    bob.groups.add(Group.objects.get_or_create(name="leads")[0])
    assert waiting(bob) == {to_prod.pk, to_leads.pk}

    response = signed_in(alice).get("/reviews/")
    own = [row["promotion"].pk for row in response.context["own"]]
    assert len(own) == 4 and to_prod.pk in own
    assert "Your requests" in response.content.decode()
    assert signed_in(bob).get("/reviews/").context["own"] == []
    assert "Nothing is waiting for you" in signed_in(carol).get("/reviews/").content.decode()


def test_the_review_page_compares_the_candidate_with_the_live_version(alice, bob, fraud):
    prod = production()
    v1, v2 = ModelVersion.objects.order_by("number")
    Alias.objects.create(model=fraud, name="production", version=v1)
    promotion = promotions.request_promotion(v2, alice, "production", "higher accuracy")
    assert promotion.environment == prod
    response = signed_in(bob).get(f"/promotions/{promotion.pk}/")
    html = re.sub(r"\s+", " ", response.content.decode())
    assert response.status_code == 200
    assert "Live v1" in html and "Candidate v2" in html
    assert re.search(r'class="num mono delta-better">\+0\.1', html)
    assert re.search(r'<tr class="diff-changed"> <td class="mono">C</td>', html)
    assert "higher accuracy" in html
    assert '<button type="submit" name="decision" value="approve"' in html
    assert 'name="comment" rows="4" required' in html
    alice_html = signed_in(alice).get(f"/promotions/{promotion.pk}/").content.decode()
    assert "You requested this promotion; a reviewer decides." in alice_html
    assert 'value="approve"' not in alice_html


def test_a_review_needs_a_comment_and_a_member_of_the_reviewer_group(alice, bob, reader, fraud):
    production()
    v2 = ModelVersion.objects.get(number=2)
    promotion = promotions.request_promotion(v2, alice, "production")
    url = f"/promotions/{promotion.pk}/review/"

    for outsider in (reader, alice):
        response = signed_in(outsider).post(url, {"decision": "approve", "comment": "ok"})
        assert response.status_code == 403
    forged = signed_in(alice, enforce_csrf_checks=True)
    assert forged.post(url, {"decision": "approve", "comment": "ok"}).status_code == 403

    response = signed_in(bob).post(url, {"decision": "approve", "comment": "  "}, follow=True)
    assert response.redirect_chain[-1][0] == f"/promotions/{promotion.pk}/"
    assert "A review needs a comment saying why." in response.content.decode()
    promotion.refresh_from_db()
    assert promotion.state == "pending" and not promotion.reviews.exists()

    response = signed_in(bob).post(url, {"decision": "reject", "comment": "not yet"}, follow=True)
    promotion.refresh_from_db()
    assert promotion.state == "rejected"
    assert "You rejected this promotion." in response.content.decode()
    again = signed_in(bob).post(url, {"decision": "approve", "comment": "now"}, follow=True)
    assert "is rejected, not pending" in again.content.decode()
    assert Event.objects.filter(type="promotion.reviewed").count() == 1


def test_promotion_status_reports_the_state_and_the_live_version(alice, bob, fraud):
    production()
    v1, v2 = ModelVersion.objects.order_by("number")
    Alias.objects.create(model=fraud, name="production", version=v1)
    promotion = promotions.request_promotion(v2, alice, "production")
    promotions.review_promotion(promotion, bob, "approve", "fine")
    data = json.loads(signed_in(bob).get(f"/promotions/{promotion.pk}/status/").content)
    assert data == {
        "id": promotion.pk,
        "state": "approved",
        "status_reason": "",
        "version": 2,
        "environment": "production",
        "current_version": 1,
        "settled": False,
    }
    html = signed_in(bob).get(f"/promotions/{promotion.pk}/").content.decode()
    assert f'data-live-url="/promotions/{promotion.pk}/status/"' in html
    assert signed_in(bob).get("/promotions/999/status/").status_code == 404
