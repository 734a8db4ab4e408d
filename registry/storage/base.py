"""The blob store interface: content-addressed, immutable, streamed.

Callers hand over streams and get back sha256 digests; they never see a path, a bucket
key or which backend is behind it. Resumable uploads are staged under an opaque upload
id (allocated by the caller with `new_upload_id`) until `finish_upload` verifies them.
"""

import contextlib
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from registry.errors import ChecksumMismatch, IncompleteBody

CHUNK_SIZE = 1024 * 1024
_DIGEST = re.compile(r"[0-9a-f]{64}")
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class BlobInfo:
    sha256: str
    size: int


class BlobCorrupt(OSError):
    """Stored bytes failed their integrity check; they are never returned as good."""


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return digest


def check_upload_id(upload_id: str) -> str:
    if not isinstance(upload_id, str) or not _UPLOAD_ID.fullmatch(upload_id):
        raise ValueError(f"not an upload id: {upload_id!r}")
    return upload_id


def check_expected(
    digest: str, size: int, expected_sha256: str | None, expected_size: int | None
) -> None:
    if expected_size is not None and size != expected_size:
        raise ChecksumMismatch(
            f"Received {size} bytes but {expected_size} were declared.",
            {"expected_size": expected_size, "actual_size": size},
        )
    if expected_sha256 is not None and digest != expected_sha256:
        raise ChecksumMismatch(
            "The sha256 of the received bytes differs from the declared one.",
            {"expected_sha256": expected_sha256, "actual_sha256": digest},
        )


def body_pieces(stream: BinaryIO, length: int) -> Iterator[bytes]:
    """Exactly `length` bytes of `stream`, in pieces; IncompleteBody if it ends before."""
    left = length
    while left > 0:
        data = stream.read(min(CHUNK_SIZE, left))
        if not data:
            raise IncompleteBody(
                f"The body ended after {length - left} of {length} bytes.",
                {"expected": length, "received": length - left},
            )
        yield data
        left -= len(data)


def new_upload_id() -> str:
    return secrets.token_hex(16)


class BlobWriter(ABC):
    """A blob being written: `write` chunks, then `commit` (verify + publish) or `abort`."""

    size: int

    @abstractmethod
    def write(self, data: bytes) -> None: ...

    @abstractmethod
    def commit(
        self, expected_sha256: str | None = None, expected_size: int | None = None
    ) -> BlobInfo: ...

    @abstractmethod
    def abort(self) -> None: ...


def unguarded(digest: str, exclusive: bool = False):
    return contextlib.nullcontext()


class BlobStore(ABC):
    # Whether blobs are encrypted at rest (see encrypted.py); the readiness check warns if not.
    encrypted: bool = False
    # How writers (shared) and the garbage collector (exclusive) serialize on one blob:
    # get_store() sets guard.blob_lock; a store built on its own (tests, benchmarks) has none.
    blob_lock = staticmethod(unguarded)

    def free_bytes(self) -> int | None:
        """Free space where blobs are written; None where it has no meaning (S3)."""
        return None

    @abstractmethod
    def writer(self, max_size: int | None = None) -> BlobWriter:
        """Start a new blob; nothing is visible under its address until commit."""

    def _writer_for(self, max_size: int | None, expected_sha256: str | None) -> BlobWriter:
        # A backend may write straight under the blob's final name when it is known.
        return self.writer(max_size=max_size)

    def put(
        self,
        stream: BinaryIO,
        *,
        expected_sha256: str | None = None,
        expected_size: int | None = None,
        max_size: int | None = None,
    ) -> BlobInfo:
        """Store everything `stream` yields until EOF, hashing it on the way."""
        writer = self._writer_for(max_size, expected_sha256)
        try:
            while chunk := stream.read(CHUNK_SIZE):
                writer.write(chunk)
            return writer.commit(expected_sha256, expected_size)
        except BaseException:
            writer.abort()
            raise

    @abstractmethod
    def open(self, digest: str, offset: int = 0, length: int | None = None) -> BinaryIO:
        """A readable stream of the blob's bytes [offset, offset+length)."""

    def iter_bytes(
        self, digest: str, offset: int = 0, length: int | None = None
    ) -> Iterator[bytes]:
        with self.open(digest, offset, length) as stream:
            while chunk := stream.read(CHUNK_SIZE):
                yield chunk

    @abstractmethod
    def exists(self, digest: str) -> bool: ...

    @abstractmethod
    def size(self, digest: str) -> int:
        """Stored size in bytes; FileNotFoundError when absent."""

    @abstractmethod
    def delete(self, digest: str) -> None: ...

    @abstractmethod
    def digests(self) -> Iterator[str]:
        """Every stored blob's digest (for verify and garbage collection)."""

    def presigned_url(self, digest: str, filename: str, seconds: int) -> str | None:
        """A short-lived URL serving the blob directly, where the backend can offer one."""
        return None

    # Resumable uploads -------------------------------------------------------------
    @abstractmethod
    def write_part(self, upload_id: str, offset: int, stream: BinaryIO, length: int) -> None:
        """Store exactly `length` bytes from `stream` at `offset` of a staged upload.

        Raises IncompleteBody if the stream ends early. The caller serializes writers of
        one upload id and only ever writes at the offset it has recorded as received.
        """

    @abstractmethod
    def finish_upload(self, upload_id: str, size: int, expected_sha256: str) -> BlobInfo:
        """Verify a staged upload and publish it as a blob; ChecksumMismatch discards it."""

    @abstractmethod
    def abort_upload(self, upload_id: str) -> None: ...

    # Care: what garbage collection and backups need (registry/services/store_care.py) --
    # Every publish or deduplication onto a blob "touches" it under guard.blob_lock, so the
    # collector can tell a blob an upload has just landed on from one nobody wants.
    @abstractmethod
    def last_touched(self, digest: str) -> float | None:
        """When the blob was last written or deduplicated onto (epoch seconds), or None."""

    @abstractmethod
    def staged_uploads(self) -> Iterator[tuple[str, float]]:
        """(upload id, when its last part was written) of every staged upload."""

    @abstractmethod
    def leftovers(self) -> Iterator[tuple[str, float]]:
        """(name, last written) of stored things no blob or upload can use."""

    @abstractmethod
    def remove_leftover(self, name: str) -> None: ...

    @abstractmethod
    def stored_objects(self, digest: str) -> list[str]:
        """Names of what a blob is stored as (itself, and its key records if encrypted)."""

    @abstractmethod
    def read_stored(self, name: str) -> BinaryIO:
        """One of those objects exactly as stored (ciphertext stays ciphertext)."""

    @abstractmethod
    def write_stored(self, name: str, stream: BinaryIO) -> None:
        """Put back an object read with `read_stored` (restoring a backup)."""
