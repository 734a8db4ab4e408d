"""Receiving a declared file's bytes: whole, or in `Content-Range` chunks that resume."""

import re
from dataclasses import dataclass
from typing import BinaryIO

from django.db import transaction

from registry.errors import ChecksumMismatch, Conflict, InvalidInput, NotFound
from registry.models import ModelVersion, VersionFile
from registry.storage import get_store, new_upload_id, validate_file_path

from . import access
from .events import record_event
from .locking import for_update
from .versions import require_uploader

_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive, as in the header
    total: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def parse_content_range(header: str | None) -> ByteRange | None:
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match:
        raise InvalidInput(
            "Content-Range must look like 'bytes START-END/TOTAL'.", {"content_range": header}
        )
    start, end, total = (int(g) for g in match.groups())
    if end < start or end >= total:
        raise InvalidInput(
            "Content-Range is out of order or beyond the total.", {"content_range": header}
        )
    return ByteRange(start, end, total)


def get_file(version: ModelVersion, path: str) -> VersionFile:
    validate_file_path(path)
    try:
        return version.files.get(path=path)
    except VersionFile.DoesNotExist:
        raise NotFound(
            f"File '{path}' is not part of version {version.number}.", {"path": path}
        ) from None


def receive_file(
    version: ModelVersion,
    user,
    path: str,
    body: BinaryIO,
    content_length: int | None,
    content_range: ByteRange | None,
) -> VersionFile:
    """Store one request's bytes of a declared file; verify it once it is complete.

    The file's row lock serializes writers, so a chunk is accepted only at the offset
    already received and a retried or duplicated chunk cannot interleave with another.
    """
    access.require_model(user, version.model, access.WRITE)
    require_uploader(version, user)
    validate_file_path(path)
    store = get_store()
    mismatch: ChecksumMismatch | None = None
    with transaction.atomic():
        version = ModelVersion.objects.select_related("model").get(pk=version.pk)
        if version.state != ModelVersion.State.UPLOADING:
            raise Conflict(
                f"Version {version.number} is {version.state}; its files are fixed.",
                {"state": version.state},
            )
        try:
            vfile = for_update(VersionFile).get(version=version, path=path)
        except VersionFile.DoesNotExist:
            raise NotFound(
                f"File '{path}' was not declared for version {version.number}.", {"path": path}
            ) from None
        if vfile.complete:
            raise Conflict(f"File '{path}' is already uploaded.", {"path": path})

        if content_range is None:
            start, length = 0, vfile.size
            if vfile.received:  # a whole-file PUT starts over
                store.abort_upload(vfile.upload_id)
                vfile.upload_id, vfile.received = "", 0
        else:
            if content_range.total != vfile.size:
                raise InvalidInput(
                    f"Content-Range total {content_range.total} differs from the declared "
                    f"size {vfile.size}.",
                    {"declared_size": vfile.size},
                )
            if content_range.start != vfile.received:
                raise Conflict(
                    f"Expected the chunk starting at byte {vfile.received}.",
                    {"received": vfile.received},
                )
            start, length = content_range.start, content_range.length
        if content_length is not None and content_length != length:
            raise InvalidInput(
                f"Content-Length {content_length} does not match the {length} bytes expected.",
                {"expected": length, "content_length": content_length},
            )
        if not vfile.upload_id:
            vfile.upload_id = new_upload_id()
        store.write_part(vfile.upload_id, start, body, length)
        vfile.received = start + length
        if vfile.received == vfile.size:
            try:
                store.finish_upload(vfile.upload_id, vfile.size, vfile.sha256)
                vfile.complete = True
            except ChecksumMismatch as exc:
                mismatch = exc  # start the file over; raised once the reset is committed
                vfile.received = 0
                record_event(
                    "file.rejected", user, version=version, data={"path": path, **exc.details}
                )
            vfile.upload_id = ""
        vfile.save(update_fields=["received", "upload_id", "complete"])
    if mismatch is not None:
        raise mismatch
    return vfile
