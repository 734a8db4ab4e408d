"""The Git mirror must not change the process's working directory: web and worker processes
run other threads (request handlers, the job lease renewer) that resolve relative paths."""

import os
import subprocess
import threading

import pytest

from registry.models import ModelVersion, RegisteredModel, VersionFile
from registry.services import gitmirror

from .conftest import default_team, sha256_of


def _ready_version(model: RegisteredModel, user, number: int) -> ModelVersion:
    """A version as the worker leaves it; written directly, as test data."""
    version = ModelVersion.objects.create(
        model=model, number=number, created_by=user, state="ready"
    )
    data = f"weights {number}".encode()
    VersionFile.objects.create(
        version=version,
        path="model.bin",
        size=len(data),
        sha256=sha256_of(data),
        received=len(data),
        complete=True,
    )
    return version


@pytest.mark.django_db
def test_a_sync_leaves_the_process_cwd_alone_while_another_thread_runs(
    alice, settings, tmp_path, monkeypatch
):
    settings.MODELGATE_GIT_DIR = tmp_path / "git"
    model = RegisteredModel.objects.create(name="fraud", created_by=alice, team=default_team())
    for number in (1, 2, 3):
        _ready_version(model, alice, number)

    # Every chdir from any thread is recorded (and still performed), and a second thread
    # keeps sampling the cwd, as a request handler would see it.
    chdirs, seen, stop = [], set(), threading.Event()
    real_chdir = os.chdir
    monkeypatch.setattr(os, "chdir", lambda path: (chdirs.append(path), real_chdir(path)))
    start = os.getcwd()

    def watch():
        while not stop.is_set():
            seen.add(os.getcwd())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        done = gitmirror.sync()
    finally:
        stop.set()
        watcher.join()

    assert done == {"versions": 3, "promotions": 0, "removed": 0}
    assert chdirs == [] and seen == {start} and os.getcwd() == start
    # And the mirror holds what it should: one commit per version, tagged.
    git = ["git", "-C", str(settings.MODELGATE_GIT_DIR)]
    tags = subprocess.run([*git, "tag"], capture_output=True, text=True, check=True).stdout
    assert set(tags.split()) == {"fraud@v1.0.0", "fraud@v2.0.0", "fraud@v3.0.0"}
    log = subprocess.run(
        [*git, "log", "--format=%s", "--name-only"], capture_output=True, text=True, check=True
    ).stdout
    assert "models/fraud/3.yaml" in log and "Register fraud version 2" in log
    status = subprocess.run(
        [*git, "status", "--porcelain"], capture_output=True, text=True, check=True
    ).stdout
    assert status == ""  # everything written was committed
    assert all(v.git_commit for v in ModelVersion.objects.all())


@pytest.mark.django_db
def test_deleting_a_model_commits_its_removal_and_keeps_its_tags(
    alice, admin_user, settings, tmp_path
):
    settings.MODELGATE_GIT_DIR = git_dir = tmp_path / "git"
    model = RegisteredModel.objects.create(name="fraud", created_by=alice, team=default_team())
    for number in (1, 2):
        _ready_version(model, alice, number)
    other = RegisteredModel.objects.create(name="churn", created_by=alice, team=default_team())
    _ready_version(other, alice, 1)
    gitmirror.sync()

    from registry.services.registered_models import delete_model

    delete_model(model, admin_user)
    assert gitmirror.sync()["removed"] == 1

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(git_dir), *args], capture_output=True, text=True, check=True
        ).stdout

    assert git("ls-files", "models/").split() == ["models/churn/1.yaml"]
    assert git("log", "-1", "--format=%s") == "Remove fraud\n"
    assert {"fraud@v1.0.0", "fraud@v2.0.0", "churn@v1.0.0"} <= set(git("tag").split())
    assert gitmirror.sync()["removed"] == 0  # once

    # A new model under the old name starts a new document; the old tag stays where it was.
    old_tag = git("rev-parse", "fraud@v1.0.0^{commit}")
    again = RegisteredModel.objects.create(name="fraud", created_by=alice, team=default_team())
    _ready_version(again, alice, 1)
    assert gitmirror.sync()["versions"] == 1
    assert "models/fraud/1.yaml" in git("ls-files", "models/").split()
    assert git("rev-parse", "fraud@v1.0.0^{commit}") == old_tag
