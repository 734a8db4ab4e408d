"""The content-addressed blob store. Everything outside this package sees only digests.

`get_store()` returns the backend configured by MODELGATE_STORAGE_URL — `file:///path`
(the default, ./var/store) or `s3://bucket/prefix` — wrapped with encryption at rest when
a master key is configured (MODELGATE_ENCRYPTION_KEY or MODELGATE_ENCRYPTION_KEY_FILE).
"""

import logging
from functools import cache
from urllib.parse import unquote, urlparse

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .base import CHUNK_SIZE, BlobCorrupt, BlobInfo, BlobStore, BlobWriter, new_upload_id
from .paths import validate_file_path

__all__ = [
    "CHUNK_SIZE",
    "BlobCorrupt",
    "BlobInfo",
    "BlobStore",
    "BlobWriter",
    "get_store",
    "new_upload_id",
    "validate_file_path",
]

log = logging.getLogger(__name__)

ENCRYPTION_OFF_WARNING = (
    "Encryption at rest is OFF: blobs are stored in plaintext. Set MODELGATE_ENCRYPTION_KEY "
    "or MODELGATE_ENCRYPTION_KEY_FILE anywhere but a laptop."
)


@cache
def _store_for(url: str, key: str, old_keys: tuple[str, ...]) -> BlobStore:
    from .guard import blob_lock

    store = _backend_for(url, key, old_keys)
    store.blob_lock = blob_lock  # shared by every node through the database
    return store


def _backend_for(url: str, key: str, old_keys: tuple[str, ...]) -> BlobStore:
    from .keys import Keyring
    from .objects import ContentStore

    parsed = urlparse(url)
    keyring = Keyring.from_texts(key, old_keys) if key else None
    if parsed.scheme == "file":
        if keyring is None:
            from .local import LocalBlobStore

            log.warning(ENCRYPTION_OFF_WARNING)
            return LocalBlobStore(unquote(parsed.path))
        from .local import LocalObjects

        objects = LocalObjects(unquote(parsed.path))
    elif parsed.scheme == "s3":
        from .s3 import S3Objects

        if not parsed.netloc:
            raise ImproperlyConfigured(
                "MODELGATE_STORAGE_URL must name a bucket: s3://bucket/prefix"
            )
        objects = S3Objects(parsed.netloc, unquote(parsed.path))
    else:
        raise ImproperlyConfigured(f"Unsupported MODELGATE_STORAGE_URL scheme: {parsed.scheme!r}")
    if keyring is None:
        log.warning(ENCRYPTION_OFF_WARNING)
        return ContentStore(objects)
    from .encrypted import EncryptedObjects

    return ContentStore(EncryptedObjects(objects, keyring), encrypted=True)


def get_store() -> BlobStore:
    return _store_for(
        settings.MODELGATE_STORAGE_URL,
        getattr(settings, "MODELGATE_ENCRYPTION_KEY", ""),
        tuple(getattr(settings, "MODELGATE_ENCRYPTION_OLD_KEYS", ())),
    )
