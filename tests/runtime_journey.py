"""One smoke journey through a running Modelgate, over real HTTP and the `modelgate` CLI.

Reusable against any deployment: tests/test_runtime_only.py runs it against gunicorn and a
Celery worker started from a runtime-only venv; a container-image test can run it against
the image under podman. Nothing here imports Django or the server's code.

    result = run_journey(base_url, client_bin, server_shell=shell, workdir=tmp_path)

- `base_url`: the server, e.g. "http://127.0.0.1:8000".
- `client_bin`: the bin directory of a venv holding only `pip install ./client`; its
  `modelgate` does the pushing, promoting and reviewing.
- `server_shell(code) -> str`: runs the Python `code` inside the server's own environment
  with Django set up and returns its stdout, e.g. `python -m django shell -c CODE` with
  DJANGO_SETTINGS_MODULE=config.settings, or `podman exec CTR python manage.py shell -c
  CODE`. It is called for what has no HTTP door: `setup_code()` (the journey's users,
  idempotent) and `AGGREGATE_CODE` (queues the monitoring aggregation task, which a Celery
  worker on the server's broker must run).
- `workdir`: a scratch directory for the model files and the CLI's config.

The journey: sign in on the login page; get API tokens with username and password; as the
admin, make `staging` need one reviewer's approval (four eyes) behind the scan and package
gates; push a small .npy model with the CLI and wait until it is ready with a clean scan;
promote it to staging (requested by a contributor, refused to her as approver, approved by
a reviewer, executed by the worker); create an ingest token; ingest labelled predictions in
one complete aggregation window; queue the aggregation; read live accuracy from the API and
check it equals what the labels imply; see the live-accuracy monitor's alert fire (alerts
API and its event). Returns what it saw (see the end of `run_journey`); fails with an
AssertionError naming the step.
"""

import json
import os
import re
import secrets
import struct
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

ENVIRONMENT = "staging"
PREFIX = "journey"
USERS = {  # role -> (username, group, staff, role in the default team)
    "admin": (f"{PREFIX}-admin", None, True, None),
    "contributor": (f"{PREFIX}-alice", None, False, "contributor"),
    "reviewer": (f"{PREFIX}-bob", "reviewers", False, "viewer"),
}
SCOPES = {"admin": ["read", "write", "admin"], "contributor": ["read", "write"]}
SCOPES["reviewer"] = ["read", "review"]
POLICY = {
    "required_approvals": 1,
    "reviewer_group": "reviewers",
    "allow_self_approval": False,
    "gates": [{"type": "scan_clean"}, {"type": "package_ready"}],
}
RECORDS, CORRECT = 20, 13  # labelled predictions, and how many the model got right
THRESHOLD = 0.8  # the monitor fires below it
TIMEOUT = 180
AGGREGATE_CODE = (
    "from workers.tasks import aggregate_monitoring; print(aggregate_monitoring.delay().id)"
)


def setup_code(password: str) -> str:
    """Python for `server_shell`: the journey's users with `password`, in their groups
    and teams."""
    users = [list(spec) for spec in USERS.values()]
    return (
        "from django.contrib.auth.models import Group, User\n"
        "from registry.models import Team, TeamMembership\n"
        "team = Team.objects.get_or_create(name='default')[0]\n"
        f"for name, group, staff, role in {users!r}:\n"
        "    user = User.objects.get_or_create(username=name)[0]\n"
        f"    user.is_staff = staff; user.set_password({password!r}); user.save()\n"
        "    if group: user.groups.add(Group.objects.get_or_create(name=group)[0])\n"
        "    if role: TeamMembership.objects.update_or_create(team=team, user=user, "
        "defaults={'role': role})\n"
        "print('journey users ready')\n"
    )


def npy_bytes(values: list[float]) -> bytes:
    """A float64 vector in NumPy's .npy format (version 1.0), written without NumPy."""
    header = f"{{'descr': '<f8', 'fortran_order': False, 'shape': ({len(values)},), }}"
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    return (
        b"\x93NUMPY\x01\x00"
        + struct.pack("<H", len(header))
        + header.encode("latin1")
        + struct.pack(f"<{len(values)}d", *values)
    )


class Step:
    """Names the step an assertion fails in, and times each one."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.name = "start"

    def __call__(self, name: str) -> None:
        self.name, self.started = name, time.monotonic()
        self.seconds[name] = 0.0

    def done(self) -> None:
        self.seconds[self.name] = round(time.monotonic() - self.started, 2)


def _wait(predicate, seconds: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        time.sleep(every)


def _ok(response: httpx.Response, *codes: int) -> dict:
    assert response.status_code in (codes or (200,)), (
        f"{response.request.method} {response.request.url} -> {response.status_code}: "
        f"{response.text[:2000]}"
    )
    return response.json() if response.content else {}


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign_in(base_url: str, username: str, password: str) -> httpx.Client:
    """The login page, as a browser posts it: a session that sees the home page."""
    client = httpx.Client(base_url=base_url, timeout=30)
    page = client.get("/login/")
    assert page.status_code == 200, page.text[:500]
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert csrf, "no CSRF token on the login page"
    response = client.post(
        "/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": csrf.group(1)},
        headers={"Referer": f"{base_url}/login/"},
    )
    assert response.status_code == 302, (response.status_code, response.text[:500])
    assert "sessionid" in client.cookies
    home = client.get("/")
    assert home.status_code == 200 and username in home.text, home.text[:500]
    return client


def create_token(base_url: str, username: str, password: str, **fields) -> str:
    body = {"username": username, "password": password, "name": f"{PREFIX}-{username}", **fields}
    response = httpx.post(f"{base_url}/api/v1/auth/tokens/", json=body, timeout=30)
    return _ok(response, 201)["token"]


def api(base_url: str, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{base_url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


class Cli:
    """The client-only venv's `modelgate`, with a token in the environment."""

    def __init__(self, client_bin: Path, base_url: str, workdir: Path):
        self.binary, self.base_url, self.workdir = Path(client_bin) / "modelgate", base_url, workdir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MODELGATE_")}
        self.env.pop("PYTHONPATH", None)
        self.env["MODELGATE_CONFIG_DIR"] = str(workdir / "cli-config")

    def __call__(self, token: str, *args, expect: int = 0) -> str:
        env = {**self.env, "MODELGATE_URL": self.base_url, "MODELGATE_TOKEN": token}
        result = subprocess.run(
            [str(self.binary), "-q", *map(str, args)],
            env=env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=TIMEOUT + 60,
        )
        assert result.returncode == expect, (
            f"modelgate {' '.join(map(str, args))} exited {result.returncode} "
            f"(expected {expect}):\n{result.stderr}{result.stdout}"
        )
        return result.stdout


def ensure_environment(admin: httpx.Client) -> dict:
    """`staging` with the four-eyes policy: created, or changed to it if it exists."""
    created = admin.post("/environments/", json={"name": ENVIRONMENT, **POLICY})
    if created.status_code == 409:
        return _ok(admin.patch(f"/environments/{ENVIRONMENT}/", json=POLICY))
    return _ok(created, 201)


def run_journey(
    base_url: str,
    client_bin: Path,
    *,
    server_shell: Callable[[str], str],
    workdir: Path,
) -> dict:
    """Run the journey (see the module's docstring); returns what it saw."""
    base_url = base_url.rstrip("/")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    step = Step()
    try:
        return _journey(base_url, Path(client_bin), server_shell, workdir, step)
    except AssertionError as exc:
        raise AssertionError(f"journey step '{step.name}': {exc}") from exc


def _journey(base_url, client_bin, server_shell, workdir, step) -> dict:
    password = secrets.token_urlsafe(18)
    names = {role: spec[0] for role, spec in USERS.items()}
    model = f"{PREFIX}-{secrets.token_hex(4)}"

    step("users (server shell)")
    assert "journey users ready" in server_shell(setup_code(password))
    step.done()

    step("sign in and tokens")
    assert httpx.get(f"{base_url}/healthz", timeout=10).status_code == 200
    sign_in(base_url, names["contributor"], password).close()
    tokens = {
        role: create_token(base_url, names[role], password, scopes=SCOPES[role]) for role in USERS
    }
    admin, alice = api(base_url, tokens["admin"]), api(base_url, tokens["contributor"])
    assert _ok(alice.get("/me/"))["username"] == names["contributor"]
    ensure_environment(admin)
    step.done()

    step("push with the CLI")
    cli = Cli(client_bin, base_url, workdir)
    folder = workdir / "model"
    folder.mkdir(exist_ok=True)
    (folder / "weights.npy").write_bytes(npy_bytes([0.25 * i for i in range(64)]))
    (folder / "README.md").write_text(f"# {model}\n\nA linear scorer for the journey.\n")
    metrics = workdir / "metrics.json"
    metrics.write_text(json.dumps({"accuracy": 0.9}))
    cli(tokens["contributor"], "models", "create", model, "--description", "journey")
    pushed = cli(
        tokens["contributor"], "push", folder, "--model", model, "--metrics", metrics,
        "--wait", "--timeout", TIMEOUT,
    )  # fmt: skip
    assert pushed.split() == [f"{model}/1"], pushed
    version = _ok(alice.get(f"/models/{model}/versions/1/"))
    assert version["state"] == "ready", version
    assert version["scan"]["status"] == "clean", version["scan"]
    step.done()

    step("promote to staging, four eyes")
    requested = json.loads(
        cli(tokens["contributor"], "promote", f"{model}/1", "--to", ENVIRONMENT, "--json")
    )
    assert requested["state"] == "pending", requested
    own = alice.post(
        f"/promotions/{requested['id']}/reviews/",
        json={"decision": "approve", "comment": "my own"},
    )
    assert own.status_code == 403, own.text  # the requester may not approve
    cli(tokens["reviewer"], "review", requested["id"], "--approve", "--comment", "looks fine")
    done = json.loads(
        cli(tokens["contributor"], "promote", f"{model}/1", "--to", ENVIRONMENT,
            "--wait", "--timeout", TIMEOUT, "--json")
    )  # fmt: skip
    assert done["id"] == requested["id"] and done["state"] == "promoted", done
    assert [r["decision"] for r in done["reviews"]] == ["approve"], done["reviews"]
    assert cli(tokens["contributor"], "resolve", f"{model}@{ENVIRONMENT}").split()[0] == (
        f"{model}/1"
    )
    step.done()

    step("monitor and ingest")
    monitor = _ok(
        alice.post(
            "/monitors/",
            json={"model": model, "environment": ENVIRONMENT, "metric": "live.accuracy",
                  "op": "<", "value": THRESHOLD, "min_samples": RECORDS},
        ),
        201,
    )  # fmt: skip
    length = monitor["window"]  # the server's aggregation window, the default span
    # Over twelve windows, so the evaluation still covers ours if a boundary passes first.
    _ok(alice.patch(f"/monitors/{monitor['id']}/", json={"window": 12 * length}))
    ingest = create_token(
        base_url, names["contributor"], password,
        scopes=["ingest"], model=model, environment=ENVIRONMENT,
    )  # fmt: skip
    # Every record in the last complete window, so the monitor's span holds it.
    now = int(time.time())
    start = datetime.fromtimestamp((now // length - 1) * length, UTC)
    at = _iso(start + timedelta(seconds=length // 2))
    predictions = [i % 2 for i in range(RECORDS)]
    labels = [p if i < CORRECT else 1 - p for i, p in enumerate(predictions)]
    records = [
        {"model": model, "version": 1, "environment": ENVIRONMENT,
         "request_id": f"{model}-{i}", "at": at, "inputs": {"x": i / 10},
         "outputs": {"prediction": p}, "latency_ms": 5 + i}
        for i, p in enumerate(predictions)
    ]  # fmt: skip
    writer = httpx.Client(
        base_url=f"{base_url}/api/v1", headers={"Authorization": f"Bearer {ingest}"}, timeout=30
    )
    accepted = _ok(writer.post("/monitoring/predictions/", json={"records": records}), 202)
    assert accepted["accepted"] == RECORDS, accepted
    feedback = [{"request_id": f"{model}-{i}", "label": y} for i, y in enumerate(labels)]
    _ok(writer.post("/monitoring/feedback/", json={"records": feedback}), 202)
    assert writer.get(f"/models/{model}/").status_code == 403  # an ingest token only writes
    step.done()

    step("aggregate and live accuracy")
    expected = round(sum(p == y for p, y in zip(predictions, labels, strict=True)) / RECORDS, 6)
    assert expected == CORRECT / RECORDS
    sent = [0.0]

    def window() -> dict | None:
        if time.monotonic() - sent[0] > 15:  # queue it (again, if a run missed our window)
            server_shell(AGGREGATE_CODE)
            sent[0] = time.monotonic()
        body = _ok(
            alice.get(
                f"/models/{model}/versions/1/monitoring/",
                params={"environment": ENVIRONMENT, "since": _iso(start - timedelta(hours=1))},
            )
        )
        for found in body["windows"]:
            if datetime.fromisoformat(found["start"]) == start and found["labelled"] == RECORDS:
                return found
        return None

    live = _wait(window, TIMEOUT, "the window with every label aggregated", every=1)
    assert live["requests"] == RECORDS and live["errors"] == 0, live
    assert live["live_metrics"]["accuracy"] == expected, live["live_metrics"]
    assert live["offline_metrics"] == {"accuracy": 0.9}, live
    step.done()

    step("alert fired")

    def firing() -> list[dict]:
        params = {"model": model, "state": "firing"}
        found = _ok(alice.get("/alerts/", params=params))["results"]
        if not found and time.monotonic() - sent[0] > 15:
            server_shell(AGGREGATE_CODE)  # evaluated on the task's next run
            sent[0] = time.monotonic()
        return found

    (alert,) = _wait(firing, TIMEOUT, "the live.accuracy alert to fire", every=1)
    assert alert["monitor"] == monitor["id"] and alert["metric"] == "live.accuracy", alert
    assert alert["value"] == expected, alert
    events = _ok(alice.get("/events/", params={"model": model, "type": "monitor.alert.fired"}))
    assert [e["data"]["value"] for e in events["results"]] == [expected], events
    step.done()

    for client in (admin, alice, writer):
        client.close()
    return {
        "model": model,
        "version": 1,
        "promotion": done["id"],
        "accuracy": live["live_metrics"]["accuracy"],
        "expected_accuracy": expected,
        "window": {"start": live["start"], "seconds": length},
        "alert": alert,
        "seconds": step.seconds,
    }
