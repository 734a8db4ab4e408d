"""The Git mirror of the registry, readable by `git log` and `gto show`.

One commit per ready version (`models/<name>/<version>.yaml`), an annotated tag
`<name>@v<version>.0.0` for the registration and `<name>#<environment>#<n>` for every
promotion. The database is the source of truth: `sync` brings the repository up to date
with it (idempotently, one writer at a time) and `rebuild` recreates it from scratch.
"""

import fcntl
import logging
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import yaml
from django.conf import settings
from django.db import transaction
from git import Actor, Repo

from registry.models import ModelVersion, Promotion

from . import jobs

log = logging.getLogger(__name__)
KIND = "sync_git"
COMMITTER = Actor("Modelgate", "modelgate@localhost")
_BAD_REF = re.compile(r"(\.\.|@\{|[\x00-\x20\x7f~^:?*\[\\]|^[./]|/\.|\.lock$|\.$|//)")


def valid_ref(name: str) -> bool:
    """Git's check-ref-format rules, so an odd model name never reaches git."""
    return (
        bool(name)
        and not _BAD_REF.search(name)
        and not any(part.startswith(".") or part.endswith(".lock") for part in name.split("/"))
    )


def request_sync() -> None:
    """Ask a worker to bring the mirror up to date (after the current transaction)."""
    jobs.enqueue(KIND, 0, coalesce=True)


@contextmanager
def _locked_repo():
    git_dir = Path(settings.MODELGATE_GIT_DIR)
    git_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(git_dir.parent / f".{git_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one writer at a time on this machine
        if (git_dir / ".git").exists():
            repo = Repo(git_dir)
        else:
            repo = Repo.init(git_dir, initial_branch="main")
            (git_dir / "README.md").write_text(
                "# Modelgate registry history\n\nWritten by Modelgate; do not edit by hand.\n"
            )
            repo.git.add("--", "README.md")
            repo.index.commit("Start the registry history", author=COMMITTER, committer=COMMITTER)
        try:
            yield repo
        finally:
            repo.close()


def version_document(version: ModelVersion) -> dict:
    return {
        "model": version.model.name,
        "version": version.number,
        "description": version.description,
        "created_by": version.created_by.get_username() if version.created_by else None,
        "created_at": version.created_at.isoformat().replace("+00:00", "Z"),
        "files": [
            {"path": f.path, "size": f.size, "sha256": f.sha256}
            for f in version.files.order_by("path")
        ],
        "metrics": version.metrics,
        "params": version.params,
        "tags": version.tags,
        "lineage": version.lineage,
        "framework": version.framework,
        "scan": version.scan_status,
        "package_sha256": version.package_sha256 or None,
    }


def _commit_version(repo: Repo, version: ModelVersion) -> str:
    name, number = version.model.name, version.number
    relative = f"models/{name}/{number}.yaml"
    tag = f"{name}@v{number}.0.0"
    if valid_ref(tag) and tag in repo.tags:
        return repo.tags[tag].commit.hexsha  # committed by a run that died before saving
    path = Path(repo.working_tree_dir) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(version_document(version), sort_keys=False))
    # `git add` as a subprocess run in the work tree: GitPython's index.add would chdir the
    # whole process, which other threads of a web or worker process would feel.
    repo.git.add("--", relative)
    user = version.created_by
    author = (
        Actor(user.get_username(), user.email or f"{user.get_username()}@modelgate")
        if user
        else COMMITTER
    )
    if repo.index.diff("HEAD"):
        commit = repo.index.commit(
            f"Register {name} version {number}", author=author, committer=COMMITTER
        )
        sha = commit.hexsha
    else:
        sha = repo.git.log("-1", "--format=%H", "--", relative)
    if valid_ref(tag):
        repo.create_tag(tag, ref=sha, message=f"Registering artifact {name} version v{number}.0.0")
    else:
        log.warning("model name %r cannot be a git tag; committed without one", name)
    return sha


def _tag_promotion(repo: Repo, promotion: Promotion) -> str:
    tag = f"{promotion.model.name}#{promotion.environment.name}#{promotion.sequence}"
    if not valid_ref(tag):
        log.warning("promotion tag %r is not a valid git ref; skipped", tag)
        return "-"
    if tag not in repo.tags:
        repo.create_tag(
            tag,
            ref=promotion.version.git_commit,
            message=(
                f"Assigning stage {promotion.environment.name} to artifact {promotion.model.name} "
                f"version v{promotion.version.number}.0.0"
            ),
        )
    return tag


@jobs.handler(KIND)
def sync(_ref_id: int = 0) -> dict[str, int]:
    """Commit every ready version and tag every promotion the repository lacks."""
    done = {"versions": 0, "promotions": 0}
    with _locked_repo() as repo:
        pending = (
            ModelVersion.objects.filter(git_commit="")
            .exclude(
                state__in=[
                    ModelVersion.State.UPLOADING,
                    ModelVersion.State.PROCESSING,
                    ModelVersion.State.FAILED,
                    # GitOps tools read every committed version as registered: an unsafe
                    # one never enters. One quarantined later by a rescan stays, as history.
                    ModelVersion.State.QUARANTINED,
                ]
            )
            .select_related("model", "created_by")
            .order_by("id")
        )
        for version in pending:
            sha = _commit_version(repo, version)
            ModelVersion.objects.filter(pk=version.pk).update(git_commit=sha)
            done["versions"] += 1
        promotions = (
            Promotion.objects.filter(state=Promotion.State.PROMOTED, git_tag="")
            .exclude(version__git_commit="")
            .select_related("model", "environment", "version")
            .order_by("sequence", "id")
        )
        for promotion in promotions:
            Promotion.objects.filter(pk=promotion.pk).update(
                git_tag=_tag_promotion(repo, promotion)
            )
            done["promotions"] += 1
    return done


def rebuild() -> dict[str, int]:
    """Recreate the repository from the database alone."""
    git_dir = Path(settings.MODELGATE_GIT_DIR)
    with transaction.atomic():
        ModelVersion.objects.exclude(git_commit="").update(git_commit="")
        Promotion.objects.exclude(git_tag="").update(git_tag="")
        if git_dir.exists():
            shutil.rmtree(git_dir)
    return sync()
