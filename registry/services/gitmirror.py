"""The Git mirror of the registry, readable by `git log` and `gto show`.

One commit per ready version (`models/<name>/<version>.yaml`), an annotated tag
`<name>@v<version>.0.0` for the registration and `<name>#<environment>#<n>` for every
promotion, with the name as `gitnames.encode` writes it for Git (itself for a lowercase
name like `fraud-eu`; `Fraud-X20Detector` for "Fraud Detector"). The database is the
source of truth: `sync` brings the repository up to date with it (idempotently, one writer
at a time) and `rebuild` recreates it from scratch.

With MODELGATE_GIT_REMOTE set, the history lives in that remote and every worker's
repository is a cache of it (see gitremote): what is missing is read from the remote's
history, not from the database's marks, which any worker may have written.
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

from registry.models import ModelVersion, Promotion, RegisteredModel

from . import gitnames, gitremote, jobs

log = logging.getLogger(__name__)
KIND = "sync_git"
# Pushes rejected because another worker pushed first, before the job fails (and retries).
PUSH_ATTEMPTS = 5
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
        try:
            yield repo
        finally:
            repo.close()


def _start_history(repo: Repo) -> None:
    (Path(repo.working_tree_dir) / "README.md").write_text(
        "# Modelgate registry history\n\nWritten by Modelgate; do not edit by hand.\n"
    )
    repo.git.add("--", "README.md")
    repo.index.commit("Start the registry history", author=COMMITTER, committer=COMMITTER)


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


def _document_path(name: str, number: int) -> str:
    return f"models/{gitnames.folder(name)}/{number}.yaml"


def _usable_tag(tag: str) -> str | None:
    return tag if valid_ref(tag) and gitnames.tag_fits(tag) else None


def _registration_tag(name: str, number: int) -> str | None:
    return _usable_tag(f"{gitnames.encode(name)}@v{number}.0.0")


def _create_tag(repo: Repo, tag: str, sha: str, message: str) -> None:
    # An annotated tag has a tagger: ours, not whatever git finds (nothing, in the image).
    with repo.git.custom_environment(
        GIT_COMMITTER_NAME=COMMITTER.name, GIT_COMMITTER_EMAIL=COMMITTER.email
    ):
        repo.create_tag(tag, ref=sha, message=message)


def _tag_registration(repo: Repo, tag: str, sha: str, name: str, number: int) -> None:
    _create_tag(repo, tag, sha, f"Registering artifact {name} version v{number}.0.0")


def _commit_document(repo: Repo, version: ModelVersion) -> str:
    name, number = version.model.name, version.number
    relative = _document_path(name, number)
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
        return commit.hexsha
    return repo.git.log("-1", "--format=%H", "--", relative)


def _commit_version(repo: Repo, version: ModelVersion) -> str:
    name, number = version.model.name, version.number
    tag = _registration_tag(name, number)
    tracked = bool(repo.git.ls_files("--", _document_path(name, number)))
    if tag and tag in repo.tags and tracked:
        return repo.tags[tag].commit.hexsha  # committed by a run that died before saving
    sha = _commit_document(repo, version)
    if tag and tag in repo.tags:  # a deleted model's, of the same name: it stays
        log.warning("tag %s belongs to a deleted model of the same name; not moved", tag)
    elif tag:
        _tag_registration(repo, tag, sha, name, number)
    else:
        log.warning("model name %r cannot be a git tag; committed without one", name)
    return sha


def _promotion_tag(promotion: Promotion) -> str | None:
    name, environment = gitnames.encode(promotion.model.name), promotion.environment.name
    return _usable_tag(f"{name}#{environment}#{promotion.sequence}")


def _create_promotion_tag(repo: Repo, promotion: Promotion, tag: str, sha: str) -> None:
    _create_tag(
        repo,
        tag,
        sha,
        f"Assigning stage {promotion.environment.name} to artifact {promotion.model.name} "
        f"version v{promotion.version.number}.0.0",
    )


def _tag_promotion(repo: Repo, promotion: Promotion) -> str:
    tag = _promotion_tag(promotion)
    if tag is None:
        log.warning("promotion %s has no valid git tag name; skipped", promotion.pk)
        return "-"
    if tag not in repo.tags:
        _create_promotion_tag(repo, promotion, tag, promotion.version.git_commit)
    return tag


def _in_history():
    """The versions the history holds: GitOps tools read every committed version as
    registered, so an unsafe one never enters (one quarantined later by a rescan stays,
    as history)."""
    return ModelVersion.objects.exclude(
        state__in=[
            ModelVersion.State.UPLOADING,
            ModelVersion.State.PROCESSING,
            ModelVersion.State.FAILED,
            ModelVersion.State.QUARANTINED,
        ]
    )


@jobs.handler(KIND)
def sync(_ref_id: int = 0) -> dict[str, int]:
    """Commit every ready version and tag every promotion the repository lacks."""
    with _locked_repo() as repo:
        if settings.MODELGATE_GIT_REMOTE:
            return _sync_with_remote(repo, settings.MODELGATE_GIT_REMOTE)
        if not repo.head.is_valid():
            _start_history(repo)
        return _sync_local(repo)


def _remove_deleted(repo: Repo) -> int:
    """Commit the removal of deleted models' documents. Their tags stay: history is history,
    and a GitOps tool reading a tag sees what was registered then (docs: the Git mirror)."""
    present = {
        path.split("/")[1]
        for path in repo.git.ls_tree("-r", "--name-only", "HEAD", "--", "models/").split("\n")
        if path.count("/") >= 2
    }
    names = RegisteredModel.objects.values_list("name", flat=True)
    gone = sorted(present - {gitnames.folder(name) for name in names})
    for folder in gone:
        repo.git.rm("-r", "-q", "--", f"models/{folder}")
        name = gitnames.decode(folder) if "~" not in folder else folder
        repo.index.commit(f"Remove {name}", author=COMMITTER, committer=COMMITTER)
    return len(gone)


def _sync_local(repo: Repo) -> dict[str, int]:
    """The only copy is this one, so the database's marks say what it holds."""
    done = {"versions": 0, "promotions": 0, "removed": _remove_deleted(repo)}
    pending = (
        _in_history().filter(git_commit="").select_related("model", "created_by").order_by("id")
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
        Promotion.objects.filter(pk=promotion.pk).update(git_tag=_tag_promotion(repo, promotion))
        done["promotions"] += 1
    return done


def _sync_with_remote(repo: Repo, url: str) -> dict[str, int]:
    """Write on top of the remote's tip and push; when another worker pushed first, start
    over from its tip. Nothing is saved to the database before the remote has it."""
    remote = gitremote.Remote(repo, url)
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        tip = remote.fetch_and_reset()
        if not repo.head.is_valid():
            _start_history(repo)  # an empty remote: this push starts the one history
        done, marks, tags = _add_missing(repo)
        if remote.push(tip, tags):
            for pk, sha in marks["versions"]:
                ModelVersion.objects.filter(pk=pk).update(git_commit=sha)
            for pk, tag in marks["promotions"]:
                Promotion.objects.filter(pk=pk).update(git_tag=tag)
            return done
        log.warning(
            "git mirror: push to %s rejected, another writer pushed first "
            "(attempt %d of %d); fetching its history and writing again",
            remote,
            attempt,
            PUSH_ATTEMPTS,
        )
    raise gitremote.RemoteError(f"git mirror: push to {remote} rejected {PUSH_ATTEMPTS} times")


def _committed(repo: Repo) -> dict[str, str]:
    """Each version document in the tree -> the commit that (last) added it: a deleted
    model's documents are gone from the tree, and one re-created under its name is new."""
    out = repo.git.log(
        "--reverse", "-z", "--format=commit %H", "--name-only", "--diff-filter=A", "HEAD",
        "--", "models/",
    )  # fmt: skip
    added, sha = {}, ""
    for token in out.split("\0"):
        token = token.lstrip("\n")
        if token.startswith("commit "):
            sha = token.removeprefix("commit ")
        elif token:
            added[token] = sha
    tracked = set(repo.git.ls_files("--", "models/").split("\n"))
    return {path: sha for path, sha in added.items() if path in tracked}


def _add_missing(repo: Repo) -> tuple[dict[str, int], dict[str, list], list[str]]:
    """Commit and tag what the history (not the database) lacks; returns the counts, the
    database marks to save once pushed, and the tags created."""
    done = {"versions": 0, "promotions": 0, "removed": _remove_deleted(repo)}
    marks: dict[str, list] = {"versions": [], "promotions": []}
    committed = _committed(repo)
    tags = set(repo.git.tag("--list").split())
    created: list[str] = []
    listed = _in_history().order_by("id").values_list("pk", "model__name", "number", "git_commit")
    for pk, name, number, marked in listed:
        path, tag = _document_path(name, number), _registration_tag(name, number)
        sha = committed.get(path)
        if sha is None:
            version = ModelVersion.objects.select_related("model", "created_by").get(pk=pk)
            sha = committed[path] = _commit_document(repo, version)
            done["versions"] += 1
            if not tag:
                log.warning("model name %r cannot be a git tag; committed without one", name)
        if tag and tag not in tags:
            _tag_registration(repo, tag, sha, name, number)
            created.append(tag)
        if marked != sha:
            marks["versions"].append((pk, sha))
    promotions = (
        Promotion.objects.filter(state=Promotion.State.PROMOTED)
        .select_related("model", "environment", "version")
        .order_by("sequence", "id")
    )
    for promotion in promotions:
        sha = committed.get(_document_path(promotion.model.name, promotion.version.number))
        if sha is None:
            continue  # its version never entered the history
        tag = _promotion_tag(promotion)
        if tag and tag not in tags:
            _create_promotion_tag(repo, promotion, tag, sha)
            created.append(tag)
            done["promotions"] += 1
        if promotion.git_tag != (tag or "-"):
            marks["promotions"].append((promotion.pk, tag or "-"))
    return done, marks, created


def rebuild() -> dict[str, int]:
    """Recreate the repository from the database alone.

    With a remote, its history is shared and never rewritten: the local cache is dropped,
    read again from the remote, and whatever the database has that it lacks is added.
    """
    git_dir = Path(settings.MODELGATE_GIT_DIR)
    with transaction.atomic():
        ModelVersion.objects.exclude(git_commit="").update(git_commit="")
        Promotion.objects.exclude(git_tag="").update(git_tag="")
        if git_dir.exists():
            shutil.rmtree(git_dir)
    return sync()
