"""The Git mirror with MODELGATE_GIT_REMOTE: one history in the remote, whichever worker
writes it, each worker's own directory only a cache.

The remote is a bare repository served by a real `git daemon` on loopback. Its access hook
can hold the first push that arrives at the door (until the test releases it), so that a
second worker's push lands first and the held one is rejected as it must be in production
when two workers sync at once.
"""

import os
import socket
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from registry.models import Environment, Job, ModelVersion, Promotion, RegisteredModel
from registry.services import gitmirror, jobs
from registry.services.promotions import request_promotion
from workers.celery import app

from .conftest import client_for, default_team, upload_version
from .processes import Process, Worker, base_env, free_port, wait_until
from .test_gitmirror import _ready_version

ACCESS_HOOK = """#!/bin/sh
# git daemon runs this before serving each connection: service, repository, host, ...
[ "$1" = receive-pack ] || exit 0
if mv "$GATE/hold" "$GATE/held" 2>/dev/null; then
    while [ ! -e "$GATE/release" ]; do sleep 0.05; done
fi
exit 0
"""


def git(where: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(where), *args], capture_output=True, text=True, check=True
    ).stdout


class Remote(Process):
    """A bare repository behind `git daemon` (push enabled), with a gate on pushes."""

    def __init__(self, tmp: Path):
        self.base = tmp / "remotes"
        self.bare = self.base / "registry.git"
        self.gate = tmp / "gate"
        self.gate.mkdir()
        self.bare.mkdir(parents=True)
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(self.bare)], check=True)
        hook = tmp / "access-hook"
        hook.write_text(ACCESS_HOOK)
        hook.chmod(0o755)
        self.port = free_port()
        self.url = f"git://127.0.0.1:{self.port}/registry.git"
        super().__init__(
            [
                "git",
                "daemon",
                "--export-all",
                "--enable=receive-pack",
                f"--base-path={self.base}",
                "--listen=127.0.0.1",
                f"--port={self.port}",
                "--reuseaddr",
                f"--access-hook={hook}",
                "--informative-errors",
                str(self.base),
            ],
            {**os.environ, "GATE": str(self.gate)},
            tmp / "git-daemon.log",
        )

    def start(self) -> "Remote":
        super().start()
        wait_until(self.listening, 15, "git daemon", self)
        return self

    def listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def hold_next_push(self) -> None:
        (self.gate / "hold").touch()

    def holding(self) -> bool:
        return (self.gate / "held").exists()

    def release(self) -> None:
        (self.gate / "release").touch()

    # --- what the remote holds ---------------------------------------------------------

    def git(self, *args: str) -> str:
        return git(self.bare, *args)

    def has_branch(self) -> bool:
        return bool(self.git("for-each-ref", "refs/heads/main").strip())

    def documents(self) -> Counter:
        """How many commits touched each version document (one each, or it is duplicated)."""
        if not self.has_branch():
            return Counter()
        out = self.git("log", "--format=", "--name-only", "main", "--", "models/")
        return Counter(line for line in out.splitlines() if line)

    def tags(self) -> set[str]:
        return set(self.git("tag", "--list").split())

    def assert_one_linear_history(self) -> list[str]:
        """Returns the commits, oldest first."""
        assert self.git("rev-list", "--merges", "main") == ""
        lines = [line.split() for line in self.git("rev-list", "--parents", "main").splitlines()]
        assert [len(line) for line in lines][-1] == 1  # the root, last
        assert all(len(line) == 2 for line in lines[:-1])  # every other commit: one parent
        # and each commit's parent is the next one listed: a single chain
        assert [line[1] for line in lines[:-1]] == [line[0] for line in lines[1:]]
        return [line[0] for line in reversed(lines)]

    def commit_adding(self, path: str) -> str:
        return self.git("log", "--format=%H", "--diff-filter=A", "main", "--", path).strip()


@pytest.fixture
def remote(tmp_path):
    daemon = Remote(tmp_path).start()
    yield daemon
    daemon.stop()


def _path(model: str, number: int) -> str:
    return f"models/{model}/{number}.yaml"


# --- two Celery workers, one remote --------------------------------------------------


@pytest.fixture
def workers(tmp_path, settings, transactional_db, remote):
    """Two workers, each with a var directory (and Git cache) of its own; w1 runs beat, whose
    reconciler re-sends a job whose message never came (as in production)."""
    started = {}
    try:
        for name in ("w1", "w2"):
            home = tmp_path / name
            env = base_env(
                settings.CELERY_BROKER_URL,
                MODELGATE_VAR_DIR=str(home / "var"),
                MODELGATE_GIT_DIR=str(home / "var" / "git"),
                MODELGATE_GIT_REMOTE=remote.url,
                MODELGATE_RECONCILE_SECONDS="1",
                MODELGATE_JOB_RESEND_SECONDS="2",
                # One sync runs at a time; a second writer races it only once the first's
                # lease has run out (a hung push), which round 2 makes happen.
                MODELGATE_JOB_LEASE_SECONDS="3",
            )
            started[name] = Worker(env, tmp_path, name, beat=name == "w1").start()
        hostnames = wait_until(lambda: _hostnames(started), 60, "both workers to answer")
        yield {name: (process, hostnames[name]) for name, process in started.items()}
    finally:
        for process in started.values():
            process.stop()


def _hostnames(started) -> dict[str, str] | None:
    answers = [name for reply in app.control.ping(timeout=1) for name in reply]
    found = {name: h for name in started for h in answers if h.startswith(f"{name}@")}
    return found if len(found) == len(started) else None


def _consume(hostname: str, on: bool) -> None:
    """Start or stop a worker taking short jobs (the Git sync among them), as an operator
    would with Celery's remote control; its processing queue is left alone."""
    control = app.control.add_consumer if on else app.control.cancel_consumer
    replies = control("celery", destination=[hostname], reply=True, timeout=5)
    assert replies and hostname in replies[0], replies


def _idle() -> bool:
    """No job is queued or running (so no sync is on its way either)."""
    busy = Job.objects.exclude(state__in=[Job.State.DONE, Job.State.FAILED])
    return not busy.exists()


def _ready(model: str, number: int) -> bool:
    version = ModelVersion.objects.get(model__name=model, number=number)
    assert version.state not in ("failed", "quarantined"), version.state
    return version.state == "ready"


def test_two_workers_write_one_linear_history_to_the_remote(workers, remote, alice, tmp_path):
    (w1, w1_host), (w2, w2_host) = workers["w1"], workers["w2"]
    api = client_for(alice)
    for name in ("fraud", "churn"):
        assert api.post("/api/v1/models/", {"name": name}, format="json").status_code == 201
    Environment.objects.create(name="staging", required_approvals=0)

    def upload_one(model: str, index: int) -> int:
        return upload_version(api, model, {"model.bin": f"{model} weights {index}".encode()})

    # Round 1: both workers take whatever comes.
    expected = [("fraud", upload_one("fraud", 1)), ("fraud", upload_one("fraud", 2))]
    expected.append(("churn", upload_one("churn", 1)))
    wait_until(lambda: set(remote.documents()) >= {_path(*v) for v in expected}, 120, "round 1")
    wait_until(_idle, 60, "round 1's jobs to end")

    # Round 2: w1's push waits at the remote's door until its lease runs out; w2 takes the
    # sync over and pushes past it.
    _consume(w2_host, on=False)
    remote.hold_next_push()
    expected.append(("fraud", upload_one("fraud", 3)))
    wait_until(remote.holding, 120, "w1 to push version 3", w1)
    assert "Register fraud version 3" in git(tmp_path / "w1/var/git", "log", "--format=%s")
    _consume(w1_host, on=False)
    _consume(w2_host, on=True)
    expected.append(("fraud", upload_one("fraud", 4)))
    wait_until(lambda: _ready("fraud", 4), 120, "version 4")
    request_promotion(ModelVersion.objects.get(model__name="fraud", number=1), alice, "staging")
    wait_until(
        lambda: _path("fraud", 4) in remote.documents() and "fraud#staging#1" in remote.tags(),
        120,
        "w2 to push versions 3, 4 and the promotion past w1",
        w2,
    )
    assert Job.objects.get(kind=gitmirror.KIND).state != Job.State.FAILED
    remote.release()
    rejected = "rejected, another writer pushed first (attempt 1 of 5)"
    wait_until(lambda: rejected in w1.log_path.read_text(), 60, "w1's push to be rejected", w1)
    _consume(w1_host, on=True)

    # Round 3: both again, several versions at once (pushes may race on their own).
    for index in range(2, 5):
        expected.append(("churn", upload_one("churn", index)))
    wait_until(lambda: set(remote.documents()) >= {_path(*v) for v in expected}, 120, "round 3")
    request_promotion(ModelVersion.objects.get(model__name="churn", number=4), alice, "staging")
    wait_until(lambda: "churn#staging#1" in remote.tags(), 120, "the second promotion's tag")
    wait_until(_idle, 60, "every job to end")

    # ONE history: every ready version in it exactly once, linear, no merges.
    assert remote.documents() == Counter({_path(*v): 1 for v in expected})
    commits = remote.assert_one_linear_history()
    assert len(commits) == 1 + len(expected)  # the root and one commit per version
    subjects = remote.git("log", "--format=%s", "main").splitlines()
    assert sorted(subjects) == sorted(
        ["Start the registry history"] + [f"Register {m} version {n}" for m, n in expected]
    )
    registrations = {f"{m}@v{n}.0.0" for m, n in expected}
    assert remote.tags() == registrations | {"fraud#staging#1", "churn#staging#1"}
    # Each tag names the commit that added its version, and each was pushed once.
    for model, number in expected:
        tagged = remote.git("rev-list", "-n1", f"{model}@v{number}.0.0").strip()
        assert tagged == remote.commit_adding(_path(model, number))
        version = ModelVersion.objects.get(model__name=model, number=number)
        assert version.git_commit == tagged  # the database points at the remote's commits
    promoted = remote.git("rev-list", "-n1", "fraud#staging#1").strip()
    assert promoted == remote.commit_adding(_path("fraud", 1))
    assert set(Promotion.objects.values_list("git_tag", flat=True)) == {
        "fraud#staging#1",
        "churn#staging#1",
    }
    # Each worker's directory is only a cache: neither holds a root of its own.
    for name in ("w1", "w2"):
        cache = tmp_path / name / "var" / "git"
        assert git(cache, "rev-list", "--max-parents=0", "main").split() == [commits[0]]


# --- one worker at a time, in this process -------------------------------------------


@pytest.mark.django_db
def test_a_new_worker_with_an_empty_directory_continues_the_remote_history(
    remote, settings, tmp_path, alice
):
    settings.MODELGATE_GIT_REMOTE = remote.url
    settings.MODELGATE_GIT_DIR = tmp_path / "first" / "git"
    model = RegisteredModel.objects.create(name="fraud", created_by=alice, team=default_team())
    first = _ready_version(model, alice, 1)
    _ready_version(model, alice, 2)
    # Marked as mirrored (by a local-only mirror, say): the remote's history decides.
    ModelVersion.objects.filter(pk=first.pk).update(git_commit="0" * 40)
    assert gitmirror.sync() == {"versions": 2, "promotions": 0, "removed": 0}
    before = remote.assert_one_linear_history()

    _ready_version(model, alice, 3)
    settings.MODELGATE_GIT_DIR = tmp_path / "fresh" / "git"  # a new pod: empty /data
    assert gitmirror.sync() == {"versions": 1, "promotions": 0, "removed": 0}
    after = remote.assert_one_linear_history()
    assert after[: len(before)] == before and len(after) == len(before) + 1
    assert remote.documents() == Counter({_path("fraud", n): 1 for n in (1, 2, 3)})
    assert remote.tags() == {"fraud@v1.0.0", "fraud@v2.0.0", "fraud@v3.0.0"}
    assert ModelVersion.objects.get(pk=first.pk).git_commit == remote.commit_adding(
        _path("fraud", 1)
    )

    # The first worker's stale cache catches up instead of pushing its old tip.
    settings.MODELGATE_GIT_DIR = tmp_path / "first" / "git"
    assert gitmirror.sync() == {"versions": 0, "promotions": 0, "removed": 0}
    assert remote.assert_one_linear_history() == after
    # and `rebuild` keeps the shared history: nothing rewritten, nothing added twice
    assert gitmirror.rebuild() == {"versions": 0, "promotions": 0, "removed": 0}
    assert remote.assert_one_linear_history() == after


@pytest.mark.django_db
def test_credentials_in_the_remote_url_never_reach_logs_or_job_errors(
    settings, tmp_path, alice, caplog
):
    # git:// echoes the host part it cannot resolve, token included
    url = f"git://modelgate:s3cret-token@127.0.0.1:{free_port()}/registry.git"
    settings.MODELGATE_GIT_REMOTE = url
    settings.MODELGATE_GIT_DIR = tmp_path / "git"
    model = RegisteredModel.objects.create(name="fraud", created_by=alice, team=default_team())
    _ready_version(model, alice, 1)
    jobs.enqueue(gitmirror.KIND, 0)  # not published: this test's transaction never commits

    jobs.run(gitmirror.KIND, 0)

    job = Job.objects.get(kind=gitmirror.KIND)
    assert job.state == Job.State.QUEUED and job.attempts == 1  # failed, to be retried
    assert "git fetch" in job.last_error and "127.0.0.1" in job.last_error
    assert "s3cret-token" not in job.last_error
    assert "job sync_git:0 failed" in caplog.text and "s3cret-token" not in caplog.text
    assert ModelVersion.objects.get().git_commit == ""
