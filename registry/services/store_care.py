"""Data care for the blob store: garbage collection, verification, backup and restore.

Garbage collection never removes a blob anything may still use. A blob is referenced by
a declared version file (complete or not: a chunked upload is declared before its first
byte), a version's package or an MLflow artifact. One-shot uploads, packages and
artifacts store their blob first and record the reference a moment later; every store
write or deduplication "touches" the blob, and a blob touched within the in-flight window
(MODELGATE_GC_INFLIGHT_SECONDS) is kept however short the grace period. Each deletion
re-checks references and touch time under the blob's exclusive lock, while uploads touch
under the shared lock (registry/storage/guard.py), so an upload finishing at the same
moment either is seen or finds the blob gone and stores it again.
"""

import hashlib
import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core import management
from django.db import connection, transaction

from registry.errors import Conflict, InvalidInput
from registry.models import ArtifactFile, ModelVersion, RegisteredModel, VersionFile
from registry.storage import BlobCorrupt, get_store
from registry.storage.guard import run_lock

from .events import record_event
from .locking import for_update

log = logging.getLogger(__name__)

BACKUP_FORMAT = 1


# --- references ----------------------------------------------------------------------
def referenced_digests(stored_only: bool = False) -> set[str]:
    """Every digest the registry refers to; `stored_only`: only those it says it has
    (complete files, ready packages), for verification."""
    files = VersionFile.objects.all()
    packages = ModelVersion.objects.exclude(package_sha256="")
    if stored_only:
        files, packages = files.filter(complete=True), packages.filter(package_state="ready")
    files = files.values_list("sha256", flat=True)
    packages = packages.values_list("package_sha256", flat=True)
    artifacts = ArtifactFile.objects.values_list("sha256", flat=True)
    return {d for d in (*files, *packages, *artifacts) if d}


def is_referenced(digest: str) -> bool:
    return (
        VersionFile.objects.filter(sha256=digest).exists()
        or ModelVersion.objects.filter(package_sha256=digest).exists()
        or ArtifactFile.objects.filter(sha256=digest).exists()
    )


# --- garbage collection ----------------------------------------------------------------
@dataclass
class GcReport:
    busy: bool = False  # another run (or a backup) holds the store
    deleted: list[str] = field(default_factory=list)
    kept_recent: int = 0  # unreferenced, but touched within the grace or in-flight window
    kept_recent_bytes: int = 0
    kept_uploads: int = 0  # staged uploads too recent to call abandoned
    window_seconds: float = 0  # the larger of the grace and in-flight windows used
    uploads_aborted: int = 0
    leftovers_removed: int = 0


def collect_garbage(
    grace: float | None = None, inflight: float | None = None, dry_run: bool = False
) -> GcReport:
    grace = settings.MODELGATE_GC_GRACE_SECONDS if grace is None else grace
    inflight = settings.MODELGATE_GC_INFLIGHT_SECONDS if inflight is None else inflight
    with run_lock() as got:
        if not got:
            return GcReport(busy=True)
        window = max(grace, inflight, 0)
        report = _collect(get_store(), time.time() - window, dry_run)
        report.window_seconds = window
    removed = report.deleted or report.uploads_aborted or report.leftovers_removed
    if removed and not dry_run:
        with transaction.atomic():
            record_event(
                "store.collected",
                None,
                data={
                    "blobs": len(report.deleted),
                    "uploads": report.uploads_aborted,
                    "leftovers": report.leftovers_removed,
                },
            )
    return report


def _collect(store, keep_after: float, dry_run: bool) -> GcReport:
    report = GcReport()
    # A snapshot to skip the bulk cheaply; every candidate is re-checked under its lock.
    referenced = referenced_digests()
    for digest in list(store.digests()):
        if digest in referenced:
            continue
        with store.blob_lock(digest, exclusive=True):
            touched = store.last_touched(digest)
            if touched is None:
                continue  # gone already
            if touched > keep_after:
                report.kept_recent += 1
                report.kept_recent_bytes += store.size(digest)
                continue
            if is_referenced(digest):
                continue
            if not dry_run:
                store.delete(digest)
            report.deleted.append(digest)

    live = set(VersionFile.objects.exclude(upload_id="").values_list("upload_id", flat=True))
    for upload_id, modified in list(store.staged_uploads()):
        if upload_id in live:
            continue
        if modified > keep_after:
            report.kept_uploads += 1
            continue
        if VersionFile.objects.filter(upload_id=upload_id).exists():
            continue
        if not dry_run:
            store.abort_upload(upload_id)
        report.uploads_aborted += 1

    for name, modified in list(store.leftovers()):
        if modified <= keep_after:
            if not dry_run:
                store.remove_leftover(name)
            report.leftovers_removed += 1
    return report


# --- verification ----------------------------------------------------------------------
@dataclass
class VerifyReport:
    checked: int = 0
    bytes: int = 0
    problems: dict[str, str] = field(default_factory=dict)  # digest -> what is wrong
    marked: list[str] = field(default_factory=list)  # "fraud v3 (model.pkl)"


def check_blob(store, digest: str) -> tuple[int, str | None]:
    """(bytes read, problem or None) for one blob, read back and re-hashed."""
    hasher, size = hashlib.sha256(), 0
    try:
        for chunk in store.iter_bytes(digest):
            hasher.update(chunk)
            size += len(chunk)
    except FileNotFoundError:
        return size, "missing from the store"
    except BlobCorrupt as exc:
        return size, f"corrupt: {exc}"
    except OSError as exc:
        return size, f"unreadable: {exc}"
    if hasher.hexdigest() != digest:
        return size, "corrupt: content does not match its sha256"
    return size, None


def verify_store(sample: float | None = None, mark: bool = True) -> VerifyReport:
    """Re-hash every stored blob (or a random share of the referenced ones) and check that
    everything referenced is present; mark the versions that use a bad blob."""
    store, report = get_store(), VerifyReport()
    referenced = referenced_digests(stored_only=True)
    if sample is None:
        digests = set(store.digests())
        for digest in referenced - digests:
            report.problems[digest] = "missing from the store"
    else:
        pool = sorted(referenced)
        digests = set(random.sample(pool, min(len(pool), math.ceil(len(pool) * sample))))
    for digest in sorted(digests):
        size, problem = check_blob(store, digest)
        report.checked += 1
        report.bytes += size
        if problem:
            report.problems[digest] = problem
    if mark:
        for digest, problem in sorted(report.problems.items()):
            report.marked += mark_affected(digest, problem)
    return report


def users_of(digest: str) -> list[str]:
    users = [
        f"{f.version.model.name} v{f.version.number} ({f.path})"
        for f in VersionFile.objects.filter(sha256=digest, complete=True).select_related(
            "version__model"
        )
    ]
    users += [
        f"{v.model.name} v{v.number} (package)"
        for v in ModelVersion.objects.filter(package_sha256=digest).select_related("model")
    ]
    users += [f"MLflow artifact {a.path}" for a in ArtifactFile.objects.filter(sha256=digest)]
    return users


def mark_affected(digest: str, problem: str) -> list[str]:
    """Record `version.integrity_failed` on every version using the blob and say why in its
    status_reason (its state is left alone: promotions and aliases stay as they are)."""
    paths: dict[int, list[str]] = {}
    for vfile in VersionFile.objects.filter(sha256=digest, complete=True):
        paths.setdefault(vfile.version_id, []).append(vfile.path)
    for version_id in ModelVersion.objects.filter(package_sha256=digest).values_list(
        "pk", flat=True
    ):
        paths.setdefault(version_id, []).append("(package)")
    marked = []
    for version_id, files in sorted(paths.items()):
        reason = f"Integrity check failed: {', '.join(files)} {problem} (sha256 {digest})."
        with transaction.atomic():
            version = for_update(ModelVersion).select_related("model").get(pk=version_id)
            marked.append(f"{version.model.name} v{version.number} ({', '.join(files)})")
            if version.status_reason == reason:
                continue  # already marked by an earlier run
            version.status_reason = reason[:5000]
            version.save(update_fields=["status_reason", "updated_at"])
            record_event(
                "version.integrity_failed",
                None,
                version=version,
                data={"files": files, "sha256": digest, "problem": problem},
            )
    return marked


# --- backup and restore ----------------------------------------------------------------
# A backup is a directory: database.json (dumpdata of every app, taken in one snapshot),
# blobs/<stored name> (every referenced blob exactly as stored: ciphertext and its key
# records when encrypted) and manifest.json, written last, which makes it complete.
_DUMP_EXCLUDE = ["contenttypes", "auth.permission", "sessions", "admin.logentry"]


@dataclass
class BackupReport:
    blobs: int = 0
    bytes: int = 0
    objects: int = 0
    path: Path | None = None


def backup(target: Path) -> BackupReport:
    target = Path(target)
    if target.exists() and any(target.iterdir()):
        raise Conflict(f"{target} is not empty; a backup goes to a new directory.")
    target.mkdir(parents=True, exist_ok=True)
    store, report = get_store(), BackupReport(path=target)
    # While a backup copies blobs, GC waits: a blob of the database snapshot cannot go.
    with run_lock(wait=True):
        digests = _dump_database(target / "database.json")
        blobs = target / "blobs"
        for digest in sorted(digests):
            for name in store.stored_objects(digest):
                destination = blobs.joinpath(*name.split("/"))
                destination.parent.mkdir(parents=True, exist_ok=True)
                with store.read_stored(name) as source, open(destination, "xb") as out:
                    shutil.copyfileobj(source, out, 1024 * 1024)
                report.objects += 1
                report.bytes += destination.stat().st_size
            report.blobs += 1
    manifest = {
        "format": BACKUP_FORMAT,
        "created_at": time.time(),
        "encrypted": store.encrypted,
        "database_sha256": _file_sha256(target / "database.json"),
        "blobs": sorted(digests),
    }
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return report


def _dump_database(path: Path) -> set[str]:
    """dumpdata of everything, and the digests it references, from one snapshot."""
    snapshot = connection.vendor == "postgresql" and not connection.in_atomic_block
    with transaction.atomic():
        if snapshot:  # every table as of one moment (SQLite's single writer gives that)
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        digests = referenced_digests()
        management.call_command(
            "dumpdata",
            format="json-exact",  # microsecond timestamps: the restore is exact
            exclude=_DUMP_EXCLUDE,
            natural_foreign=True,
            natural_primary=True,
            output=str(path),
            verbosity=0,
        )
    return digests


def _file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1024 * 1024):
            hasher.update(chunk)
    return hasher.hexdigest()


@dataclass
class RestoreReport:
    blobs: int = 0
    bytes: int = 0
    problems: dict[str, str] = field(default_factory=dict)


def restore(source: Path, verify: bool = True) -> RestoreReport:
    """Bring a backup back on an empty, migrated installation; verify every blob."""
    source = Path(source)
    try:
        manifest = json.loads((source / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{source} is not a complete backup (manifest.json: {exc}).") from None
    if manifest.get("format") != BACKUP_FORMAT:
        raise InvalidInput(f"Unknown backup format {manifest.get('format')!r}.")
    if _file_sha256(source / "database.json") != manifest["database_sha256"]:
        raise InvalidInput("database.json does not match the manifest; the backup is damaged.")
    store, report = get_store(), RestoreReport()
    if bool(manifest["encrypted"]) != store.encrypted:
        raise Conflict(
            "The backup was taken with encryption "
            f"{'on' if manifest['encrypted'] else 'off'}; configure the store the same way "
            "(and with the same master key) before restoring."
        )
    if RegisteredModel.objects.exists() or ModelVersion.objects.exists():
        raise Conflict("This installation already has models; restore needs an empty one.")

    # Blobs first, so no restored version ever points at a missing blob.
    blobs = source / "blobs"
    for path in sorted(p for p in blobs.rglob("*") if p.is_file()):
        name = path.relative_to(blobs).as_posix()
        with open(path, "rb") as stream:
            store.write_stored(name, stream)
        report.bytes += path.stat().st_size
    _load_database(source / "database.json")
    for digest in manifest["blobs"]:
        report.blobs += 1
        if verify:
            problem = check_blob(store, digest)[1]
            if problem:
                report.problems[digest] = problem
    return report


def _load_database(path: Path) -> None:
    from .monitoring import partitions

    # Day partitions of the prediction table must exist before their rows are loaded.
    if partitions.is_partitioned():
        days = set()
        for item in json.loads(path.read_text()):
            if item["model"] == "registry.predictionrecord":
                days.add(item["fields"]["at"][:10])
        from datetime import date

        partitions.ensure(date.fromisoformat(day) for day in sorted(days))
    with transaction.atomic():
        management.call_command("loaddata", str(path), verbosity=0)
