"""What a worker does with a finalized version. Every step is safe to run twice."""

import hashlib
import logging

from registry.models import ModelVersion
from registry.storage import get_store

from .versions import mark_failed, mark_ready

log = logging.getLogger(__name__)


def verify_files(version: ModelVersion) -> list[str]:
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
        except OSError as exc:
            problems.append(f"{vfile.path}: unreadable ({exc})")
            continue
        if size != vfile.size or hasher.hexdigest() != vfile.sha256:
            problems.append(f"{vfile.path}: stored bytes do not match size and sha256")
    return problems


def process_version(version_id: int) -> ModelVersion | None:
    version = ModelVersion.objects.select_related("model").filter(pk=version_id).first()
    if version is None or version.state != ModelVersion.State.PROCESSING:
        return version  # deleted, or finished by an earlier run
    problems = verify_files(version)
    if problems:
        log.warning("version %s failed verification: %s", version, problems)
        return mark_failed(version, "Verification failed: " + "; ".join(problems[:20]))
    return mark_ready(version)
