"""Streamed blob downloads with ETag and single-range requests."""

import logging
import re

from django.conf import settings
from django.http import FileResponse, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.utils.http import content_disposition_header

from registry.storage import CHUNK_SIZE, BlobCorrupt, get_store

from .errors import json_error

log = logging.getLogger(__name__)

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """(start, end inclusive), None for the whole file, or "unsatisfiable"."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        return None  # multi-range or malformed: RFC 9110 lets us send the whole file
    first, last = match.groups()
    if first == "":
        length = int(last)
        if length == 0:
            return "unsatisfiable"
        return max(size - length, 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return "unsatisfiable"
    return start, end


def blob_response(request, digest: str, size: int, filename: str) -> HttpResponse:
    etag = f'"{digest}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": content_disposition_header(True, filename),
        "Cache-Control": "private, max-age=0, must-revalidate",
    }
    if etag in [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]:
        return HttpResponse(status=304, headers=headers)
    wanted = parse_range(request.headers.get("Range"), size)
    if_range = request.headers.get("If-Range")
    if if_range and if_range.strip() != etag:
        wanted = None  # the client's copy is of other bytes: send everything
    if wanted == "unsatisfiable":
        return HttpResponse(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    store = get_store()
    if request.method == "HEAD":
        response = HttpResponse(headers=headers, content_type="application/octet-stream")
        response["Content-Length"] = str(size)
        return response
    if request.method == "GET" and settings.MODELGATE_STORAGE_REDIRECT:
        url = store.presigned_url(digest, filename, settings.MODELGATE_STORAGE_REDIRECT_SECONDS)
        if url:  # the client fetches (and ranges) the object from the bucket itself
            return HttpResponseRedirect(url, headers={"Cache-Control": "no-store"})
    # Opened before the response starts, so damage found at the start (header, data key,
    # first segment) is a clear error; damage found later cuts the stream short.
    start, end = wanted if wanted is not None else (0, size - 1)
    try:
        stream = store.open(digest, start, None if wanted is None else end - start + 1)
    except BlobCorrupt as exc:
        log.error("refusing to serve blob %s: %s", digest, exc)
        return json_error(
            500,
            "corrupt_blob",
            "The stored bytes of this file failed their integrity check and are not served; "
            "an operator should run verify_store.",
        )
    except OSError as exc:  # missing from the store, or its master key is not configured
        log.error("cannot read blob %s: %s", digest, exc)
        return json_error(500, "storage_error", "The file's bytes cannot be read from the store.")
    if wanted is None:
        response = FileResponse(stream, content_type="application/octet-stream")
        response["Content-Length"] = str(size)
        if not hasattr(stream, "fileno"):  # not sendfile-able: fewer, larger reads
            response.block_size = CHUNK_SIZE
    else:
        length = end - start + 1
        response = StreamingHttpResponse(
            _chunks(stream),
            status=206,
            content_type="application/octet-stream",
        )
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
        response["Content-Length"] = str(length)
    for key, value in headers.items():
        response[key] = value
    return response


def _chunks(stream):
    with stream:
        while chunk := stream.read(CHUNK_SIZE):
            yield chunk
