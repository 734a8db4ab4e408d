"""What a worker does with a finalized version: verify, scan, extract, package.

Each step reads bytes from the blob store as a stream and records its progress on the
version, so the UI can show it live. The whole pipeline is one leased job and is safe
to run again from the start: every step's result depends only on the stored bytes.
"""

import hashlib
import logging
import time

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from registry import packaging, scanner
from registry.errors import InsufficientStorage, InvalidInput
from registry.models import ModelVersion
from registry.storage import get_store

from . import jobs
from .monitoring import baseline as monitoring_baseline
from .versions import mark_failed, mark_ready, quarantine

log = logging.getLogger(__name__)
KIND = "process_version"


class Heartbeat:
    """Keeps the job's lease alive during long loops, at most one write every few seconds.

    It beats three times per lease at least: a lease that ran out mid-run would let the
    reconciler start the same pipeline again beside this one.
    """

    def __init__(self, kind: str, ref_id: int, every: float | None = None):
        lease = settings.MODELGATE_JOB_LEASE_SECONDS
        self.kind, self.ref_id = kind, ref_id
        self.every = every if every is not None else min(5.0, lease / 3)
        self._last = time.monotonic()

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.every:
            jobs.heartbeat(self.kind, self.ref_id)
            self._last = now


def _set_step(version: ModelVersion, step: str, state: str) -> None:
    version.pipeline = {**version.pipeline, step: state}
    ModelVersion.objects.filter(pk=version.pk).update(pipeline=version.pipeline)


def verify_files(version: ModelVersion, beat=lambda: None) -> list[str]:
    """Recompute every file's size and sha256 from the store; return what is wrong."""
    store = get_store()
    problems = []
    for vfile in version.files.all():
        try:
            if not store.exists(vfile.sha256):
                problems.append(f"{vfile.path}: missing from the store")
                continue
            hasher, size = hashlib.sha256(), 0
            for chunk in store.iter_bytes(vfile.sha256):
                hasher.update(chunk)
                size += len(chunk)
                beat()
        except OSError as exc:
            problems.append(f"{vfile.path}: unreadable ({exc})")
            continue
        if size != vfile.size or hasher.hexdigest() != vfile.sha256:
            problems.append(f"{vfile.path}: stored bytes do not match size and sha256")
    return problems


def scan_limits() -> scanner.Limits:
    return scanner.Limits(
        max_expanded_bytes=settings.MODELGATE_SCAN_MAX_EXPANDED_BYTES,
        max_ratio=settings.MODELGATE_SCAN_MAX_RATIO,
        max_depth=settings.MODELGATE_SCAN_MAX_DEPTH,
        max_members=settings.MODELGATE_SCAN_MAX_MEMBERS,
        seconds_per_file=settings.MODELGATE_SCAN_SECONDS_PER_FILE,
    )


def scan_version(version: ModelVersion, beat=lambda: None) -> scanner.ScanResult:
    """Judge every file of the version by its bytes, under the current policy."""
    store = get_store()
    files = list(version.files.all())
    options = {
        "limits": scan_limits(),
        "beat": beat,
        "unsafe_globals": frozenset(settings.MODELGATE_SCAN_UNSAFE_GLOBALS),
        "version_paths": frozenset(f.path for f in files),
    }
    results = [
        scanner.scan_file(f.path, lambda digest=f.sha256: store.open(digest), **options)
        for f in files
    ]
    return scanner.combine(results)


def record_scan(version: ModelVersion, result: scanner.ScanResult) -> None:
    fields = {
        "scan_status": result.status,
        "scan_findings": [f.as_dict() for f in result.findings[:500]],
        "scan_files": result.files,
        "scanned_at": timezone.now(),
    }
    ModelVersion.objects.filter(pk=version.pk).update(**fields)
    for field, value in fields.items():
        setattr(version, field, value)


def unsafe_reason(result: scanner.ScanResult) -> str:
    """One line naming what made a scan unsafe, for the version's status."""
    unsafe = [f for f in result.findings if f.severity == "unsafe"]
    named = []
    for f in unsafe[:3]:
        where = f"{f.file}!{f.member}" if f.member else f.file
        what = f"{f.module}.{f.name}" if f.module else f.detail
        named.append(f"{what} in {where}")
    more = f" and {len(unsafe) - 3} more" if len(unsafe) > 3 else ""
    return f"Quarantined: the scan found a dangerous import: {'; '.join(named)}{more}."


def _file_refs(version: ModelVersion) -> list[packaging.FileRef]:
    """The version's files with their scan verdicts, which the package's manifest carries."""
    verdicts = version.scan_files or {}
    return [
        packaging.FileRef(f.path, f.size, f.sha256, scan=verdicts.get(f.path, {}).get("status", ""))
        for f in version.files.all()
    ]


def extract(version: ModelVersion) -> list[str]:
    """Read known files into the version's metadata; returns problems that fail it."""
    found = packaging.extract_metadata(_file_refs(version), get_store().open)
    updates = {"extracted": {k: found[k] for k in ("mlflow", "onnx") if k in found}}
    if found.get("framework") and not version.framework:
        updates["framework"] = found["framework"]
    if found.get("signature") and not version.signature:
        updates["signature"] = found["signature"]
    if found.get("model_card") and not version.model_card:
        updates["model_card"] = found["model_card"]
    if "requirements" in found:
        updates["requirements"] = found["requirements"]
    # Monitoring files: checked against the same schemas as the API's; metadata sent with
    # the version wins over a file.
    problems = list(found.get("problems", []))
    for field, clean in (
        ("baseline", monitoring_baseline.clean_baseline),
        ("explanations", monitoring_baseline.clean_explanations),
    ):
        if field in found and getattr(version, field) is None:
            try:
                updates[field] = clean(found[field], packaging.MONITORING_FILES[field])
            except InvalidInput as exc:
                problems.append(exc.message)
    if problems:
        return problems
    ModelVersion.objects.filter(pk=version.pk).update(**updates)
    for field, value in updates.items():
        setattr(version, field, value)
    return []


class _CountingWriter:
    """Passes the tar's bytes to the blob writer, keeping the job's lease alive."""

    def __init__(self, writer, beat):
        self.writer, self.beat = writer, beat

    def write(self, data: bytes) -> int:
        self.writer.write(data)
        self.beat()
        return len(data)


def package(version: ModelVersion, beat=lambda: None) -> None:
    store = get_store()
    if version.package_state == "ready" and store.exists(version.package_sha256):
        return  # built by an earlier run; the bundle is reproducible anyway
    meta = {
        "model": version.model.name,
        "version": version.number,
        "framework": version.framework,
        "requirements": version.requirements,
        "signature": version.signature,
        "metrics": version.metrics,
        "params": version.params,
        "created_at": version.created_at.isoformat().replace("+00:00", "Z"),
        "created_by": version.created_by.get_username() if version.created_by else None,
    }
    writer = store.writer()
    try:
        packaging.build_package(
            meta, _file_refs(version), store.open, _CountingWriter(writer, beat)
        )
        info = writer.commit()
    except BaseException:
        writer.abort()
        raise
    ModelVersion.objects.filter(pk=version.pk).update(
        package_state="ready", package_sha256=info.sha256, package_size=info.size
    )
    version.package_state, version.package_sha256 = "ready", info.sha256


@jobs.handler(KIND, give_up=lambda version_id, error: _give_up(version_id, error))
def process_version(version_id: int) -> None:
    version = (
        ModelVersion.objects.select_related("model", "created_by").filter(pk=version_id).first()
    )
    if version is None or version.state != ModelVersion.State.PROCESSING:
        return  # deleted, or finished by an earlier run
    beat = Heartbeat(KIND, version_id)

    _set_step(version, "verify", "running")
    problems = verify_files(version, beat)
    if problems:
        _set_step(version, "verify", "failed")
        log.warning("version %s failed verification: %s", version, problems)
        mark_failed(version, "Verification failed: " + "; ".join(problems[:20]))
        return
    _set_step(version, "verify", "done")

    _set_step(version, "scan", "running")
    result = scan_version(version, beat)
    record_scan(version, result)
    _set_step(version, "scan", "done")
    if result.status == "unsafe":
        # Nothing more is built from an unsafe version: no metadata read, no package.
        quarantine(version, unsafe_reason(result))
        return

    _set_step(version, "extract", "running")
    problems = extract(version)
    if problems:
        _set_step(version, "extract", "failed")
        mark_failed(version, "Extract failed: " + "; ".join(problems))
        return
    _set_step(version, "extract", "done")

    _set_step(version, "package", "running")
    try:
        package(version, beat)
    except InsufficientStorage:
        # Retrying at once would only fail again: wait for space, saying so on the version.
        reason = "Waiting for disk space to write the package; retried every few minutes."
        ModelVersion.objects.filter(pk=version.pk).update(status_reason=reason)
        raise jobs.Postpone(settings.MODELGATE_FULL_DISK_RETRY_SECONDS, reason) from None
    _set_step(version, "package", "done")

    with transaction.atomic():
        mark_ready(version)
        from .gitmirror import request_sync

        request_sync()


def _give_up(version_id: int, error: str) -> None:
    version = ModelVersion.objects.filter(pk=version_id).first()
    if version is not None:
        mark_failed(version, f"Processing kept failing: {error}")
