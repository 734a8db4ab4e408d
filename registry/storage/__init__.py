"""The content-addressed blob store. Everything outside this package sees only digests.

`get_store()` returns the backend configured by MODELGATE_STORAGE_URL (file:///path now;
s3://bucket/prefix and encryption at rest slot in behind the same interface).
"""

from functools import cache
from urllib.parse import unquote, urlparse

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .base import CHUNK_SIZE, BlobInfo, BlobStore, BlobWriter, new_upload_id
from .paths import validate_file_path

__all__ = [
    "CHUNK_SIZE",
    "BlobInfo",
    "BlobStore",
    "BlobWriter",
    "get_store",
    "new_upload_id",
    "validate_file_path",
]


@cache
def _store_for(url: str) -> BlobStore:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        from .local import LocalBlobStore

        return LocalBlobStore(unquote(parsed.path))
    raise ImproperlyConfigured(f"Unsupported MODELGATE_STORAGE_URL scheme: {parsed.scheme!r}")


def get_store() -> BlobStore:
    return _store_for(settings.MODELGATE_STORAGE_URL)
