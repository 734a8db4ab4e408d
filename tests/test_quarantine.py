"""The gate that holds, through the registry's doors: what a scan decides reaches every one.

Each attack route of issue 15 is uploaded through the API as a harmless payload (its
command would create a canary file) and processed by the real pipeline: it ends unsafe or
unverified and never reaches staging. Real models stay clean and promotable. An unsafe
version is quarantined: never latest, no alias, no package, no download but an admin's
explicit and audited one, red in the CLI and the browser. A rescan under a stricter policy
quarantines a live version and raises its alarm.
"""

import io
import os
import pickle
import threading
import time

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection

from registry.models import Alert, Environment, Event, Job, ModelVersion, Monitor
from registry.services import jobs
from registry.services.processing import KIND as PROCESS

from .conftest import client_for, upload_version
from .receivers import Receiver
from .scan_payloads import attack_routes, bomb, controls
from .test_promotions import run_queued


class _System:
    """Pickles as a call to os.system: loading it would run the command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.fixture
def canary(tmp_path):
    path = tmp_path / "canary"
    yield path
    assert not path.exists(), "a payload ran: the canary file exists"


@pytest.fixture
def staging(db):
    """An environment that needs no review: only the gates stand between a version and it."""
    return Environment.objects.create(name="staging", required_approvals=0, gates=[])


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def new_model(api, name: str) -> str:
    response = api.post("/api/v1/models/", {"name": name}, format="json")
    assert response.status_code == 201, response.content
    return name


def processed(api, model: str, files: dict[str, bytes]) -> ModelVersion:
    number = upload_version(api, model, files)
    run_queued(PROCESS)
    return ModelVersion.objects.get(model__name=model, number=number)


def promote(api, version: ModelVersion, environment: str = "staging"):
    response = api.post(
        f"/api/v1/models/{version.model.name}/versions/{version.number}/promotions/",
        {"environment": environment},
        format="json",
    )
    run_queued()
    return response


def test_every_attack_route_ends_unsafe_or_unverified_and_never_reaches_staging(
    alice_api, staging, canary
):
    routes = attack_routes(canary)
    assert len(routes) >= 6
    for index, (case, (path, data)) in enumerate(sorted(routes.items())):
        model = new_model(alice_api, f"route-{index}")
        version = processed(alice_api, model, {path: data})
        assert version.scan_status in ("unsafe", "unverified"), (case, version.scan_findings)
        assert version.scan_findings, case
        if version.scan_status == "unsafe":
            assert version.state == "quarantined", case
        response = promote(alice_api, version)
        if response.status_code == 409:
            assert "quarantined" in response.json()["error"]["message"], case
        else:
            assert response.status_code == 201, (case, response.content)
            body = response.json()
            assert body["state"] == "blocked", case
            scan_gate = next(g for g in body["gates"] if g["type"] == "scan_clean")
            assert not scan_gate["passed"] and "unverified" in scan_gate["detail"], case
        assert staging.name not in version.aliases.values_list("name", flat=True)


def test_real_models_end_clean_and_promotable(alice_api, staging):
    for index, (case, files) in enumerate(sorted(controls().items())):
        model = new_model(alice_api, f"control-{index}")
        version = processed(alice_api, model, files)
        assert (version.state, version.scan_status) == ("ready", "clean"), (
            case,
            version.scan_findings,
        )
        assert set(version.scan_files) == set(files), case
        assert all(v["status"] == "clean" for v in version.scan_files.values()), case
        response = promote(alice_api, version)
        assert response.status_code == 201 and response.json()["state"] != "blocked", case
        assert version.aliases.filter(name="staging").exists(), case


def test_a_compression_bomb_is_unverified_within_seconds_and_scanned_once(
    alice_api, transactional_db, settings
):
    """The scan beats its lease: with a lease shorter than the scan, the reconciler and a
    second worker find it still running, and it runs exactly once."""
    settings.MODELGATE_JOB_LEASE_SECONDS = 1
    model = new_model(alice_api, "bomb")
    path, data = bomb()
    assert len(data) < 64 * 1024
    number = upload_version(alice_api, model, {path: data})
    version_id = ModelVersion.objects.get(model__name=model, number=number).pk
    started = time.monotonic()

    def first_worker():
        try:
            jobs.run(PROCESS, version_id)
        finally:
            connection.close()

    worker = threading.Thread(target=first_worker)
    worker.start()
    second_tries = 0
    while worker.is_alive():
        jobs.reconcile()
        jobs.run(PROCESS, version_id)  # a second worker handed the same job: must not run it
        second_tries += 1
        worker.join(0.2)
    elapsed = time.monotonic() - started
    version = ModelVersion.objects.get(pk=version_id)
    assert version.scan_status == "unverified", version.scan_findings
    assert any("limit" in f["detail"] or "max_" in f["detail"] for f in version.scan_findings)
    assert elapsed < 30, f"the bomb held the scan for {elapsed:.1f}s"
    assert Job.objects.get(kind=PROCESS, ref_id=version_id).attempts == 1
    assert Event.objects.filter(type="version.ready", version_number=number).count() == 1
    assert second_tries >= 1


@pytest.fixture
def quarantined(alice_api, canary):
    """fraud/1 clean and ready, fraud/2 quarantined (an os.system pickle)."""
    model = new_model(alice_api, "fraud")
    clean = processed(alice_api, model, {"weights.npy": npy_bytes(np.arange(4.0))})
    payload = pickle.dumps(_System(f"touch {canary}"), protocol=2)
    unsafe = processed(alice_api, model, {"model.pkl": payload})
    assert clean.state == "ready" and clean.scan_status == "clean", clean.scan_findings
    return clean, unsafe, payload


def test_an_unsafe_version_is_quarantined_never_latest_and_takes_no_alias(
    alice_api, quarantined, staging
):
    unsafe = quarantined[1]
    assert unsafe.state == "quarantined" and unsafe.scan_status == "unsafe"
    assert "system" in unsafe.status_reason and unsafe.package_state == "none"
    event = Event.objects.get(type="version.quarantined", version_number=unsafe.number)
    assert event.data["reason"] == unsafe.status_reason

    assert alice_api.get("/api/v1/models/fraud/versions/latest/").json()["version"] == 1
    assert alice_api.get("/api/v1/models/fraud/").json()["latest_version"] == 1
    detail = alice_api.get("/api/v1/models/fraud/versions/2/").json()
    assert detail["state"] == "quarantined" and detail["scan"]["status"] == "unsafe"
    assert detail["package"]["download_url"] is None

    moved = alice_api.put("/api/v1/models/fraud/aliases/champion/", {"version": 2}, format="json")
    assert moved.status_code == 409 and "quarantined" in moved.json()["error"]["message"]
    promoted = promote(alice_api, unsafe)
    assert promoted.status_code == 409 and "quarantined" in promoted.json()["error"]["message"]

    listed = alice_api.get("/api/v1/models/fraud/versions/?state=quarantined").json()
    assert [v["version"] for v in listed["results"]] == [2]


def test_a_quarantined_versions_bytes_go_only_to_an_admin_who_asks_and_it_is_audited(
    alice_api, admin_api, admin_user, quarantined
):
    payload = quarantined[2]
    url = "/api/v1/models/fraud/versions/2/files/model.pkl"
    for client in (alice_api, admin_api):
        refused = client.get(url)
        assert refused.status_code == 403 and "quarantined" in refused.json()["error"]["message"]
    assert alice_api.get(url + "?allow_quarantined=true").status_code == 403
    assert alice_api.head(url).status_code == 403
    assert alice_api.get("/api/v1/models/fraud/versions/2/package/").status_code == 403
    assert not Event.objects.filter(type="version.quarantined_download").exists()

    fetched = admin_api.get(url + "?allow_quarantined=true")
    assert fetched.status_code == 200
    assert b"".join(fetched.streaming_content) == payload
    audit = Event.objects.get(type="version.quarantined_download")
    assert (audit.actor_name, audit.version_number) == (admin_user.username, 2)

    read_only = client_for(admin_user, scopes=["read"])
    assert read_only.get(url + "?allow_quarantined=true").status_code == 403


def test_mlflow_sees_a_quarantined_version_as_failed_registration_and_cannot_load_it(
    alice_api, quarantined
):
    shown = alice_api.get("/api/2.0/mlflow/model-versions/get?name=fraud&version=2").json()
    version = shown["model_version"]
    assert version["status"] == "FAILED_REGISTRATION"
    assert "dangerous import" in version["status_message"]
    artifact = alice_api.get("/api/2.0/mlflow-artifacts/artifacts/modelgate/fraud/2/model.pkl")
    assert artifact.status_code == 403
    assert artifact.json()["error_code"] == "PERMISSION_DENIED"
    copied = alice_api.post(
        "/api/2.0/mlflow/model-versions/create",
        {"name": "fraud", "source": "models:/fraud/2"},
        format="json",
    )
    assert copied.status_code >= 400 and "quarantined" in copied.json()["message"]


def test_an_environment_allow_list_admits_named_globals_and_is_audited(
    alice_api, admin_api, staging
):
    model = new_model(alice_api, "custom")
    # A protocol 2 pickle of mypkg.features.Scaler(): an unknown global, not a dangerous one.
    data = b"\x80\x02cmypkg.features\nScaler\nq\x00)\x81q\x01."
    version = processed(alice_api, model, {"model.pkl": data})
    assert (version.state, version.scan_status) == ("ready", "unverified")
    assert promote(alice_api, version).json()["state"] == "blocked"

    bad = admin_api.patch(
        "/api/v1/environments/staging/", {"allowed_globals": ["os system"]}, format="json"
    )
    assert bad.status_code == 400
    assert (
        alice_api.patch(
            "/api/v1/environments/staging/",
            {"allowed_globals": ["mypkg.features.Scaler"]},
            format="json",
        ).status_code
        == 403
    )
    changed = admin_api.patch(
        "/api/v1/environments/staging/",
        {"allowed_globals": ["mypkg.features.Scaler"]},
        format="json",
    )
    assert changed.status_code == 200 and changed.json()["allowed_globals"] == [
        "mypkg.features.Scaler"
    ]
    audit = Event.objects.filter(type="environment.updated").latest("id")
    assert audit.data["after"] == {"allowed_globals": ["mypkg.features.Scaler"]}
    assert audit.data["before"] == {"allowed_globals": []}

    response = promote(alice_api, version)
    assert response.status_code == 201 and response.json()["state"] != "blocked"
    assert version.aliases.filter(name="staging").exists()


def test_a_rescan_under_a_stricter_policy_quarantines_a_live_version_and_raises_the_alarm(
    alice_api, admin_api, staging, settings
):
    settings.MODELGATE_WEBHOOK_ALLOW_PRIVATE = True
    model = new_model(alice_api, "churn")
    files = controls()["sklearn-joblib"]
    version = processed(alice_api, model, files)
    assert version.scan_status == "clean"
    assert promote(alice_api, version).json()["state"] != "blocked"
    assert version.aliases.filter(name="staging").exists()

    with Receiver() as receiver:
        hook = admin_api.post(
            "/api/v1/webhooks/",
            {"url": receiver.url, "events": ["version.quarantined", "monitor.alert.fired"]},
            format="json",
        )
        assert hook.status_code == 201, hook.content
        call_command("rescan")  # same policy: nothing changes
        assert ModelVersion.objects.get(pk=version.pk).state == "ready"

        settings.MODELGATE_SCAN_UNSAFE_GLOBALS = ["sklearn.linear_model"]
        call_command("rescan", model="churn")
        run_queued("deliver_webhook")
        version.refresh_from_db()
        assert (version.state, version.scan_status) == ("quarantined", "unsafe")
        assert version.aliases.filter(name="staging").exists()  # it stays, and so the alarm
        monitor = Monitor.objects.get(model=version.model, environment="staging")
        assert monitor.metric == "quarantined"
        alert = Alert.objects.get(monitor=monitor, state="firing")
        assert alert.value == 1.0
        event = Event.objects.get(type="version.quarantined")
        assert event.data["live_in"] == ["staging"] and event.data["before"] == "ready"
        assert receiver.of_type("version.quarantined")
        assert receiver.of_type("monitor.alert.fired")
    served = alice_api.get(f"/api/v1/models/churn/versions/@staging/files/{next(iter(files))}")
    assert served.status_code == 403


def test_only_admins_queue_a_rescan_through_the_api(alice_api, admin_api, quarantined):
    assert alice_api.post("/api/v1/admin/rescan/", {}, format="json").status_code == 403
    assert admin_api.post("/api/v1/admin/rescan/", [], format="json").status_code == 400
    missing = admin_api.post("/api/v1/admin/rescan/", {"model": "nope"}, format="json")
    assert missing.status_code == 404
    queued = admin_api.post("/api/v1/admin/rescan/", {"model": "fraud"}, format="json")
    assert queued.status_code == 202 and queued.json() == {"queued": 2}
    run_queued("rescan_version")
    assert Event.objects.filter(type="version.rescanned").count() == 2
    assert ModelVersion.objects.get(model__name="fraud", number=2).state == "quarantined"


@pytest.mark.browser
def test_the_browser_shows_a_quarantined_version_red_and_offers_no_download(
    page, live_server, quarantined, alice
):
    from playwright.sync_api import expect

    from .conftest import sign_in

    sign_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/models/fraud/")
    row = page.get_by_test_id("quarantined-row")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("v2")
    expect(row.locator(".badge-quarantined")).to_have_text("quarantined")
    red = row.locator("td").first.evaluate("td => getComputedStyle(td).backgroundColor")
    clean_row = page.locator("tbody tr", has_text="v1").first
    green = clean_row.locator("td").first.evaluate("td => getComputedStyle(td).backgroundColor")
    assert red != green

    page.goto(f"{live_server.url}/models/fraud/versions/2/")
    expect(page.get_by_test_id("version-state")).to_have_text("quarantined")
    expect(page.get_by_test_id("version-state")).to_have_class("badge badge-quarantined")
    expect(page.get_by_test_id("quarantine-banner")).to_be_visible()
    expect(page.get_by_test_id("scan-status")).to_have_text("unsafe")
    assert page.get_by_role("link", name="Download package").count() == 0
    assert page.locator('a[href*="/files/"]').count() == 0


@pytest.mark.live
def test_modelgate_pull_refuses_a_quarantined_version_but_an_admin_may_take_it(
    live_server, quarantined, alice, admin_user, tmp_path
):
    from .conftest import token_for
    from .test_cli import MODELGATE, cli_env, run

    payload = quarantined[2]
    alice_env = cli_env(
        tmp_path / "a", MODELGATE_URL=live_server.url, MODELGATE_TOKEN=token_for(alice)
    )
    refused = run([MODELGATE, "pull", "fraud/2", tmp_path / "out"], alice_env, expect=2)
    assert "quarantined" in refused.stderr and "--allow-quarantined" in refused.stderr
    assert not (tmp_path / "out" / "model.pkl").exists()
    listed = run([MODELGATE, "versions", "ls", "fraud"], alice_env)
    assert "quarantined" in listed.stdout
    shown = run([MODELGATE, "show", "fraud/2"], alice_env)
    assert "QUARANTINED" in shown.stdout and "unsafe" in shown.stdout
    # Asking is not enough: only an admin's token gets the bytes.
    run(
        [MODELGATE, "pull", "fraud/2", tmp_path / "out", "--allow-quarantined"], alice_env, expect=2
    )
    assert not Event.objects.filter(type="version.quarantined_download").exists()

    admin_env = cli_env(
        tmp_path / "b", MODELGATE_URL=live_server.url, MODELGATE_TOKEN=token_for(admin_user)
    )
    run([MODELGATE, "pull", "fraud/2", tmp_path / "out", "--allow-quarantined"], admin_env)
    assert (tmp_path / "out" / "model.pkl").read_bytes() == payload
    audit = Event.objects.get(type="version.quarantined_download")
    assert audit.actor_name == admin_user.username
