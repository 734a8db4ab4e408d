"""Streamed blob downloads with ETag and single-range requests."""

import re

from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from django.utils.http import content_disposition_header

from registry.storage import get_store

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
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
    if wanted is None:
        response = FileResponse(store.open(digest), content_type="application/octet-stream")
        response["Content-Length"] = str(size)
    else:
        start, end = wanted
        length = end - start + 1
        response = StreamingHttpResponse(
            store.iter_bytes(digest, start, length),
            status=206,
            content_type="application/octet-stream",
        )
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
        response["Content-Length"] = str(length)
    for key, value in headers.items():
        response[key] = value
    return response
