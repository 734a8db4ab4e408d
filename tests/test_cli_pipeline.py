"""The CLI in CI/CD pipelines: the commands of examples/ci run against a live server and a
real worker, with a reviewer approving between steps, and the documented exit codes."""

import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from registry.client import Client, ClientError
from registry.client.api import TimedOut
from registry.models import Alias, Environment, ModelVersion, Promotion

from .conftest import ROOT, token_for, wait_for

MODELGATE = ROOT / ".venv" / "bin" / "modelgate"
EXAMPLES = ROOT / "examples" / "ci"
RELEASE = EXAMPLES / "release.sh"
STAGES = ["register", "staging", "production", "deploy"]

pytestmark = pytest.mark.live


# --- the live registry ---------------------------------------------------------------


@pytest.fixture
def server(transactional_db, live_server, celery_worker, settings, tmp_path):
    """A live server and a worker, with staging (no review) and production (one approval
    from `reviewers`, accuracy >= 0.9) as the example pipeline expects."""
    settings.MODELGATE_GIT_DIR = tmp_path / "git"
    Environment.objects.create(
        name="staging",
        required_approvals=0,
        gates=[{"type": "scan_clean"}, {"type": "package_ready"}],
    )
    Environment.objects.create(
        name="production",
        required_approvals=1,
        reviewer_group="reviewers",
        gates=[
            {"type": "scan_clean"},
            {"type": "package_ready"},
            {"type": "metric", "metric": "accuracy", "op": ">=", "value": 0.9},
        ],
    )
    return live_server.url


@pytest.fixture
def tokens(alice, bob, reader) -> dict[str, str]:
    # The CI job's token can write but not review; the reviewer uses their own.
    return {
        "ci": token_for(alice, ["read", "write"]),
        "reviewer": token_for(bob),
        "reader": token_for(reader),
    }


@pytest.fixture
def workspace(tmp_path) -> Path:
    """What a training step leaves for the pipeline: ./model and ./metrics.json."""
    root = tmp_path / "workspace"
    (root / "model" / "preprocessing").mkdir(parents=True)
    # A fixed first byte: random bytes that begin as a pickle would (0x80, 1 in 256) are
    # scanned as one, and their garbage opcodes end `unverified`.
    weights = b"W" + os.urandom(2 * 1024 * 1024 + 320)
    (root / "model" / "model.bin").write_bytes(weights)
    (root / "model" / "preprocessing" / "scaler.json").write_text('{"mean": [0.1, 0.2]}')
    (root / "model" / "README.md").write_text("# fraud\n\nCard fraud scores.\n")
    write_metrics(root, 0.93)
    return root


def write_metrics(root: Path, accuracy: float) -> None:
    (root / "metrics.json").write_text(json.dumps({"accuracy": accuracy, "auc": 0.97}))


def environ(server: str, token: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """A CI job's environment: URL and token only, no saved login, modelgate on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELGATE_", "GITHUB_"))}
    env.update(
        MODELGATE_URL=server,
        MODELGATE_TOKEN=token,
        MODELGATE_CONFIG_DIR=str(tmp_path / "no-login"),
        PATH=f"{MODELGATE.parent}{os.pathsep}{env.get('PATH', '')}",
        MODEL="fraud",
        CI_COMMIT_SHA="0123abcd",
        CI_PIPELINE_URL="https://gitlab.example.com/ml/fraud/-/pipelines/42",
    )
    env.update(extra)
    return env


def run(args: list, env: dict, cwd: Path, expect: int) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(a) for a in args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == expect, (
        f"{args} exited {result.returncode}, expected {expect}\n"
        f"stdout: {result.stdout}\nstderr: {result.stderr}"
    )
    assert "Traceback" not in result.stderr
    return result


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def stages_in(path: Path) -> list[str]:
    """The release.sh stages a CI file runs, in the order its jobs are written."""
    config = yaml.safe_load(path.read_text())
    jobs = config.get("jobs", config)  # GitHub nests jobs; GitLab's are top-level keys
    found = []
    for job in jobs.values():
        if not isinstance(job, dict):
            continue
        lines = [s.get("run", "") for s in job.get("steps", [])] + job.get("script", [])
        for line in lines:
            words = line.split()
            if words and words[0] == "examples/ci/release.sh":
                found.append(words[1])
    return found


class Pipeline:
    """Runs the stages of examples/ci/release.sh in one workspace, as CI jobs would."""

    def __init__(self, server: str, token: str, workspace: Path, tmp_path: Path):
        self.env = environ(server, token, tmp_path)
        self.workspace = workspace

    def stage(self, name: str, expect: int = 0, **env: str) -> subprocess.CompletedProcess:
        return run([RELEASE, name], {**self.env, **env}, self.workspace, expect)

    def start(self, name: str) -> subprocess.Popen:
        return subprocess.Popen(
            [str(RELEASE), name],
            env=self.env,
            cwd=self.workspace,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture
def pipeline(server, tokens, workspace, tmp_path) -> Pipeline:
    return Pipeline(server, tokens["ci"], workspace, tmp_path)


@pytest.fixture
def modelgate(server, tokens, tmp_path):
    """`modelgate` as `who` (a key of `tokens`), outside any pipeline."""

    def modelgate_(*args, who: str = "ci", expect: int = 0) -> subprocess.CompletedProcess:
        env = environ(server, tokens[who], tmp_path)
        return run([MODELGATE, *args], env, tmp_path, expect)

    return modelgate_


def pending_promotion(modelgate, environment: str = "production") -> dict:
    """Wait until a reviewer's `promotions ls` shows one pending promotion; return it."""

    def listed():
        out = modelgate("promotions", "ls", "--state", "pending", "--json", who="reviewer")
        return [p for p in json.loads(out.stdout) if p["environment"] == environment]

    found = wait_for(listed, timeout=60, interval=0.3)
    assert len(found) == 1
    return found[0]


def finish(process: subprocess.Popen, timeout: float = 90) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stdout, stderr


# --- the example pipeline ------------------------------------------------------------


def test_both_ci_examples_run_the_release_stages_in_order():
    assert stages_in(EXAMPLES / "github-actions.yml") == STAGES
    assert stages_in(EXAMPLES / "gitlab-ci.yml") == STAGES
    github = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())
    assert set(github["env"]) >= {"MODELGATE_URL", "MODELGATE_TOKEN"}
    assert os.access(RELEASE, os.X_OK)


def test_the_example_pipeline_releases_through_review_to_a_verified_deploy(
    pipeline, modelgate, workspace
):
    # register: push, then wait until the worker has made the version ready.
    registered = pipeline.stage("register")
    assert registered.stdout.strip() == "fraud/1 ready"
    assert (workspace / "release.env").read_text() == "MODEL_VERSION=fraud/1\n"
    version = ModelVersion.objects.get(model__name="fraud", number=1)
    assert version.state == "ready"
    assert version.lineage["code_commit"] == "0123abcd"
    assert version.lineage["run_url"].endswith("/pipelines/42")

    # staging needs no review: `promote --wait` returns once the alias moved.
    staged = pipeline.stage("staging")
    assert re.fullmatch(r"Promotion \d+: fraud/1 -> staging is promoted\.", staged.stdout.strip())
    assert Alias.objects.get(name="staging").version.number == 1

    # production blocks until a reviewer approves.
    production = pipeline.start("production")
    promotion = pending_promotion(modelgate)
    assert (promotion["model"], promotion["version"], promotion["requested_by"]) == (
        "fraud",
        1,
        "alice",
    )
    assert promotion["comment"] == "CI release of 0123abcd"
    time.sleep(1.5)  # a few polls later: still waiting, nothing live
    assert production.poll() is None
    assert not Alias.objects.filter(name="production").exists()

    # The CI job's token cannot approve its own request: refused, exit 2.
    own = modelgate("review", promotion["id"], "--approve", "--comment", "ok", expect=2)
    assert "'review' scope" in own.stderr
    assert production.poll() is None

    reviewed = modelgate(
        "review", promotion["id"], "--approve", "--comment", "metrics hold up", who="reviewer"
    )
    # The worker may already have picked it up by the time the answer is written.
    assert reviewed.stdout.strip().rsplit(" ", 1)[-1] in {"approved.", "promoting.", "promoted."}
    code, stdout, stderr = finish(production)
    assert code == 0, stderr
    assert stdout.strip() == f"Promotion {promotion['id']}: fraud/1 -> production is promoted."
    assert Alias.objects.get(name="production").version.number == 1

    # deploy: resolve production, pull that version, check it with sha256sum.
    deployed = pipeline.stage("deploy")
    assert deployed.stdout.splitlines() == [
        "Pulled fraud/1 (3 files) into deploy.",
        "Deployed fraud/1 into deploy.",
    ]
    assert files_of(workspace / "deploy") == files_of(workspace / "model")

    # resolve prints the version, then `sha256  path` per file, for scripts.
    pushed = files_of(workspace / "model")
    expected = {path: hashlib.sha256(data).hexdigest() for path, data in pushed.items()}
    lines = modelgate("resolve", "fraud@production").stdout.splitlines()
    assert lines[0] == "fraud/1"
    assert sorted(lines[1:]) == sorted(f"{digest}  {path}" for path, digest in expected.items())
    resolved = json.loads(modelgate("resolve", "fraud@production", "--json").stdout)
    assert (resolved["model"], resolved["version"], resolved["state"]) == ("fraud", 1, "ready")
    assert {f["path"]: f["sha256"] for f in resolved["files"]} == expected
    assert resolved["package"]["state"] == "ready" and len(resolved["package"]["sha256"]) == 64

    # A re-run of a finished job is harmless: already live, exit 0.
    again = pipeline.stage("production")
    assert again.stdout.strip().endswith("fraud/1 -> production is promoted.")
    assert Promotion.objects.filter(environment__name="production").count() == 1


def test_a_version_that_fails_a_gate_stops_the_pipeline_with_exit_code_2(pipeline, workspace):
    write_metrics(workspace, 0.5)
    pipeline.stage("register")
    pipeline.stage("staging")  # staging has no metric gate

    blocked = pipeline.stage("production", expect=2)
    assert blocked.stdout.strip().endswith(": fraud/1 -> production is blocked.")
    assert "blocked by a gate" in blocked.stderr and "accuracy" in blocked.stderr
    assert not Alias.objects.filter(name="production").exists()


def test_a_rejection_ends_the_waiting_job_with_exit_code_2(pipeline, modelgate):
    pipeline.stage("register")
    production = pipeline.start("production")
    promotion = pending_promotion(modelgate)
    modelgate(
        "review", promotion["id"], "--reject", "--comment", "drift on new cards", who="reviewer"
    )
    code, stdout, stderr = finish(production)
    assert code == 2
    assert stdout.strip().endswith("fraud/1 -> production is rejected.")
    assert "drift on new cards" in stderr
    assert not Alias.objects.filter(name="production").exists()


# --- promote, wait and the exit codes outside the example ----------------------------


def test_promote_wait_exits_2_while_review_is_pending_and_follows_the_same_promotion(
    pipeline, modelgate
):
    pipeline.stage("register")
    first = modelgate("promote", "fraud/1", "--to", "production", "--wait", "--json", expect=2)
    promotion = json.loads(first.stdout)
    number = promotion["id"]
    assert promotion["state"] == "pending"
    assert "waiting for 1 approval(s) from 'reviewers'" in first.stderr
    assert f"modelgate review {number} --approve" in first.stderr

    # Asking again follows the open promotion instead of failing with a conflict.
    second = modelgate("promote", "fraud/1", "--to", "production", "--wait", expect=2)
    assert second.stdout.strip() == f"Promotion {number}: fraud/1 -> production is pending."
    assert f"Following the existing promotion {number}" in second.stderr
    assert Promotion.objects.count() == 1

    listed = modelgate("promotions", "ls", "--state", "pending", who="reviewer").stdout
    assert listed.splitlines()[0].split()[:4] == ["ID", "VERSION", "ENV", "STATE"]
    assert listed.splitlines()[1].split()[:4] == [str(number), "fraud/1", "production", "pending"]
    modelgate("review", number, "--approve", "--comment", "fine", who="reviewer")
    done = modelgate("promote", "fraud/1", "--to", "production", "--wait", "--json")
    done = json.loads(done.stdout)
    assert (done["id"], done["state"]) == (number, "promoted")
    shown = modelgate("promotions", "show", number).stdout
    assert "gate metric: pass" in shown and "approve by bob: fine" in shown


def test_waits_honour_their_timeout_and_exit_3(pipeline, modelgate, server, tokens):
    pipeline.stage("register")
    started = time.monotonic()
    timed_out = modelgate(
        "promote", "fraud/1", "--to", "production", "--wait-for-review", "--timeout", "2", expect=3
    )
    assert 2 <= time.monotonic() - started < 4.5  # measured: 2.2 s
    assert "(fraud/1 -> production) is still pending after 2s." in timed_out.stderr

    with Client(server, tokens["ci"]) as client:  # declared, never uploaded
        client.create_version("fraud", [{"path": "m.bin", "size": 1, "sha256": "0" * 64}])
    started = time.monotonic()
    waited = modelgate("wait", "fraud/2", "--state", "ready", "--timeout", "1.5", expect=3)
    assert 1.5 <= time.monotonic() - started < 4  # measured: 1.7 s
    assert "fraud/2 is still uploading after 1.5s." in waited.stderr
    ready = json.loads(modelgate("wait", "fraud/1", "--json").stdout)
    assert ready["state"] == "ready"


def test_errors_exit_1_and_refusals_exit_2(pipeline, modelgate, tmp_path, server, tokens):
    pipeline.stage("register")
    # A reader may not request promotions: refused.
    refused = modelgate("promote", "fraud/1", "--to", "staging", who="reader", expect=2)
    assert refused.stderr.startswith("Error: ") and refused.stdout == ""
    # Not found, an unknown environment, an unreachable server: errors.
    modelgate("resolve", "fraud/9", expect=1)
    nowhere = modelgate("promote", "fraud/1", "--to", "nowhere", expect=1)
    assert "Environment 'nowhere' does not exist." in nowhere.stderr
    env = environ("http://127.0.0.1:9", tokens["ci"], tmp_path)
    unreachable = run([MODELGATE, "resolve", "fraud@production"], env, tmp_path, expect=1)
    assert "Cannot reach http://127.0.0.1:9" in unreachable.stderr
    # A wrong command line: click's usage error, nothing sent.
    modelgate("review", "1", "--comment", "no decision", expect=2)
    assert "Exit codes:" in modelgate("--help").stdout


class FlakyTransport(httpx.BaseTransport):
    """The network between the CI runner and the registry: the first `breaks` polls of a
    promotion fail (a 503 from a restarting proxy, then a reset connection)."""

    def __init__(self, breaks: int):
        self.inner = httpx.HTTPTransport()
        self.breaks = breaks
        self.broken = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        polled = request.method == "GET" and "/promotions/" in request.url.path
        if polled and self.broken < self.breaks:
            self.broken += 1
            if self.broken % 2:
                return httpx.Response(503, request=request, text="upstream restarting")
            raise httpx.ReadError("connection reset by peer", request=request)
        return self.inner.handle_request(request)


def test_a_wait_rides_out_server_hiccups_but_not_more_than_max_retries(pipeline, server, tokens):
    pipeline.stage("register")
    flaky = FlakyTransport(breaks=3)
    with Client(server, tokens["ci"], transport=flaky, max_retries=3) as client:
        promotion = client.request_promotion("fraud", 1, "staging", "hiccups")
        done = client.wait_for_promotion(promotion["id"], timeout=60, interval=0.05)
        assert done["state"] == "promoted"
    assert flaky.broken == 3

    # One failure more than allowed in a row ends the wait with the error, not a hang.
    flaky = FlakyTransport(breaks=10)
    with Client(server, tokens["ci"], transport=flaky, max_retries=3) as client:
        with pytest.raises(ClientError) as caught:
            client.wait_for_promotion(promotion["id"], timeout=60, interval=0.05)
        assert not isinstance(caught.value, TimedOut)
    assert flaky.broken == 4
