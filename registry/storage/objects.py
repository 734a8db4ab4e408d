"""Content addressing on top of a plain object store (a folder, a bucket, or either encrypted).

`ObjectStore` is the small set of operations a backend offers: named objects written
through a writer that publishes them atomically, read by range, listed by prefix.
`ContentStore` turns it into a `BlobStore`: blobs named by the sha256 of their content,
and resumable uploads staged as one object per received part, so any node can take the
next chunk and any node can finish the upload.
"""

import contextlib
import hashlib
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import BinaryIO

from registry.errors import ChecksumMismatch, TooLarge

from .base import (
    CHUNK_SIZE,
    BlobInfo,
    BlobStore,
    BlobWriter,
    body_pieces,
    check_digest,
    check_expected,
    check_upload_id,
)


class ObjectWriter(ABC):
    @abstractmethod
    def write(self, data: bytes) -> None: ...

    def flush(self) -> None:
        """Make the bytes written so far durable (publish does it anyway); may be a no-op."""
        return None

    @abstractmethod
    def publish(self, name: str, overwrite: bool = False) -> bool:
        """Make the bytes visible under `name` at once, complete or not at all.

        Without `overwrite` an existing object is kept and False is returned.
        """

    @abstractmethod
    def abort(self) -> None: ...


class ObjectStore(ABC):
    @abstractmethod
    def writer(self, target: str | None = None) -> ObjectWriter:
        """A new object; `target` is a hint of the name it will most likely be published as."""

    def sized_writer(self, name: str, size: int) -> ObjectWriter:
        """A writer of `name` that will be given `size` bytes (a staged chunk), so that a
        backend can pick the cheaper way to store them (S3: one PUT when small enough)."""
        return self.writer(name)

    @abstractmethod
    def read(self, name: str, offset: int = 0, length: int | None = None) -> BinaryIO:
        """Bytes [offset, offset+length) of an object; FileNotFoundError when absent."""

    @abstractmethod
    def size(self, name: str) -> int: ...

    @abstractmethod
    def exists(self, name: str) -> bool: ...

    @abstractmethod
    def delete(self, name: str) -> None: ...

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None: ...

    @abstractmethod
    def list(self, prefix: str, start_after: str = "") -> Iterator[tuple[str, int]]:
        """(name, stored size) of every object whose name starts with `prefix` (and sorts
        after `start_after`, when given)."""

    @abstractmethod
    def modified(self, name: str) -> float:
        """When the object was last written (epoch seconds); FileNotFoundError when absent."""

    def entries(self, prefix: str) -> Iterator[tuple[str, int, float]]:
        """(name, stored size, last written) of every object under `prefix`."""
        for name, size in self.list(prefix):
            try:
                yield name, size, self.modified(name)
            except FileNotFoundError:
                continue

    def put_bytes(self, name: str, data: bytes, overwrite: bool = True) -> bool:
        writer = self.writer(name)
        try:
            writer.write(data)
            return writer.publish(name, overwrite)
        except BaseException:
            writer.abort()
            raise

    def touch(self, name: str) -> None:
        """Create an empty object, or refresh its last-written time."""
        self.put_bytes(name, b"")

    def get_bytes(self, name: str) -> bytes:
        with self.read(name) as stream:
            return stream.read()

    def presigned_url(self, name: str, filename: str, seconds: int) -> str | None:
        return None

    def composer(self, name: str, sources: "list[tuple[str, int]]") -> "Composer | None":
        """A writer of `name` made of the `sources` objects (name, size) in order, copied
        where they are stored, if this store can; else None (and the caller streams)."""
        return None


class Composer(ObjectWriter):
    """An object assembled from stored ones without moving their bytes through us.

    Each source must be read through `read_source`, in order, exactly once: what is read
    is what gets copied (pinned by ETag), so the caller can verify it before `publish`.
    """

    def write(self, data: bytes) -> None:
        pass  # the bytes are already stored; they are only read here to be verified

    @abstractmethod
    def read_source(self, index: int) -> BinaryIO: ...


def blob_name(digest: str) -> str:
    check_digest(digest)
    return f"sha256/{digest[:2]}/{digest[2:4]}/{digest}"


def pin_name(digest: str) -> str:
    return f"touched/{digest[:2]}/{digest}"


def _part_prefix(upload_id: str) -> str:
    return f"parts/{check_upload_id(upload_id)}/"


class _ContentWriter(BlobWriter):
    def __init__(self, store: "ContentStore", max_size: int | None, target: str | None = None):
        self._store, self._objects, self._max_size = store, store.objects, max_size
        # With the digest known up front, S3 streams straight under the blob's name (a
        # multipart upload stays invisible until completed, and commit completes it only
        # once the hash matches) rather than to a temporary key copied at publish.
        self._writer = store.objects.writer(target)
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._max_size is not None and self.size > self._max_size:
            raise TooLarge(f"File exceeds the limit of {self._max_size} bytes.")
        self._hash.update(data)
        self._writer.write(data)

    def commit(self, expected_sha256: str | None = None, expected_size: int | None = None):
        digest = self._hash.hexdigest()
        try:
            check_expected(digest, self.size, expected_sha256, expected_size)
            name = blob_name(digest)
            with self._store.blob_lock(digest):  # see guard.py: GC cannot delete it under our feet
                if self._objects.exists(name):  # identical content is stored once
                    self._writer.abort()
                else:
                    self._writer.publish(name)
                self._store.touch(digest)
        except BaseException:
            self._writer.abort()
            raise
        return BlobInfo(digest, self.size)

    def abort(self) -> None:
        self._writer.abort()


class ContentStore(BlobStore):
    def __init__(self, objects: ObjectStore, *, encrypted: bool = False):
        self.objects, self.encrypted = objects, encrypted
        # Bookkeeping (touch marks) and backups deal in the objects as stored.
        self.raw: ObjectStore = getattr(objects, "inner", objects)

    def writer(self, max_size: int | None = None) -> BlobWriter:
        return _ContentWriter(self, max_size)

    def free_bytes(self) -> int | None:
        root = getattr(self.raw, "root", None)  # local objects (encrypted) have a root
        return shutil.disk_usage(root).free if root is not None else None

    def _writer_for(self, max_size: int | None, expected_sha256: str | None) -> BlobWriter:
        try:
            target = blob_name(expected_sha256) if expected_sha256 is not None else None
        except ValueError:  # not a digest: commit reports the mismatch
            target = None
        return _ContentWriter(self, max_size, target)

    def open(self, digest: str, offset: int = 0, length: int | None = None) -> BinaryIO:
        return self.objects.read(blob_name(digest), offset, length)

    def exists(self, digest: str) -> bool:
        return self.objects.exists(blob_name(digest))

    def size(self, digest: str) -> int:
        return self.objects.size(blob_name(digest))

    def delete(self, digest: str) -> None:
        self.objects.delete(blob_name(digest))
        self.raw.delete(pin_name(digest))

    def digests(self) -> Iterator[str]:
        for name, _ in self.objects.list("sha256/"):
            digest = name.rsplit("/", 1)[-1]
            if name == f"sha256/{digest[:2]}/{digest[2:4]}/{digest}" and len(digest) == 64:
                yield digest

    def presigned_url(self, digest: str, filename: str, seconds: int) -> str | None:
        if self.encrypted:  # the bucket holds ciphertext only; the server must decrypt
            return None
        return self.objects.presigned_url(blob_name(digest), filename, seconds)

    # Resumable uploads: one object per part, named by its offset and length ------------
    def _parts(self, upload_id: str) -> list[tuple[int, int, str]]:
        parts = []
        for name, _ in self.objects.list(_part_prefix(upload_id)):
            start, _, length = name.rsplit("/", 1)[-1].partition("-")
            parts.append((int(start), int(length), name))
        return sorted(parts)

    def write_part(self, upload_id: str, offset: int, stream: BinaryIO, length: int) -> None:
        # The caller writes only at the offset it has recorded, so a part at or beyond it is
        # a leftover of a write whose database commit never happened.
        prefix = _part_prefix(upload_id)
        for name, _ in self.objects.list(prefix, start_after=f"{prefix}{offset:020d}"):
            self.objects.delete(name)
        name = f"{prefix}{offset:020d}-{length:020d}"
        writer = self.objects.sized_writer(name, length)  # on S3: no temporary key, no copy
        try:
            for data in body_pieces(stream, length):
                writer.write(data)
            writer.publish(name, overwrite=True)
        except BaseException:
            writer.abort()
            raise

    def finish_upload(self, upload_id: str, size: int, expected_sha256: str) -> BlobInfo:
        try:
            with self.blob_lock(check_digest(expected_sha256)):
                info = self._assemble(upload_id, size, expected_sha256)
                self.touch(expected_sha256)  # for GC, still under the lock
                return info
        finally:
            self.objects.delete_prefix(_part_prefix(upload_id))

    def _assemble(self, upload_id: str, size: int, expected_sha256: str) -> BlobInfo:
        chain, position = [], 0
        for start, length, name in self._parts(upload_id):
            if start == position:
                chain.append((name, length))
                position += length
        if position != size:
            raise ChecksumMismatch(
                f"Received {position} bytes but {size} were declared.",
                {"expected_size": size, "actual_size": position},
            )
        # Written straight under the blob's name: an object store makes it visible only
        # when published, and it is published only once the hash matches.
        name = blob_name(expected_sha256)
        if self.objects.exists(name):
            writer = None
        else:  # on S3 the parts are copied server-side while we hash them
            writer = self.objects.composer(name, chain) or self.objects.writer(name)
        try:
            hasher = hashlib.sha256()
            for index, (part, _) in enumerate(chain):
                with self._read_part(writer, index, part) as stream:
                    while data := stream.read(CHUNK_SIZE):
                        hasher.update(data)
                        if writer is not None:
                            writer.write(data)
            check_expected(hasher.hexdigest(), size, expected_sha256, None)
            if writer is not None:
                writer.publish(name)
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        return BlobInfo(expected_sha256, size)

    def _read_part(self, writer: ObjectWriter | None, index: int, part: str) -> BinaryIO:
        if isinstance(writer, Composer):
            return writer.read_source(index)
        return self.objects.read(part)

    def abort_upload(self, upload_id: str) -> None:
        self.objects.delete_prefix(_part_prefix(upload_id))

    # Care: garbage collection and backups (registry/services/store_care.py) -------------
    def touch(self, digest: str) -> None:
        # A tiny marker rather than rewriting the blob: on S3 a blob's time could only be
        # refreshed by copying it onto itself.
        self.raw.touch(pin_name(digest))

    def last_touched(self, digest: str) -> float | None:
        times = []
        for name in (blob_name(digest), pin_name(digest)):
            with contextlib.suppress(FileNotFoundError):
                times.append(self.raw.modified(name))
        return max(times, default=None)

    def staged_uploads(self) -> Iterator[tuple[str, float]]:
        newest: dict[str, float] = {}
        for name, _, modified in self.raw.entries("parts/"):
            upload_id = name.split("/")[1]
            newest[upload_id] = max(modified, newest.get(upload_id, 0.0))
        yield from newest.items()

    def leftovers(self) -> Iterator[tuple[str, float]]:
        """Objects nothing can use: temporary objects, key records and touch marks whose
        object is gone. Recent ones may belong to a write in progress; the caller waits."""
        yield from ((name, modified) for name, _, modified in self.raw.entries("tmp/"))
        blobs = {name for name, _ in self.raw.list("sha256/")}
        objects = blobs | {name for name, _ in self.raw.list("parts/")}
        for name, _, modified in self.raw.entries("keys/"):
            if name.removeprefix("keys/").rpartition("/")[0] not in objects:
                yield name, modified
        for name, _, modified in self.raw.entries("touched/"):
            digest = name.rsplit("/", 1)[-1]
            if len(digest) != 64 or blob_name(digest) not in blobs:
                yield name, modified

    def remove_leftover(self, name: str) -> None:
        self.raw.delete(name)

    def stored_objects(self, digest: str) -> list[str]:
        name = blob_name(digest)
        return [name, *(record for record, _ in self.raw.list(f"keys/{name}/"))]

    def read_stored(self, name: str) -> BinaryIO:
        return self.raw.read(name)

    def write_stored(self, name: str, stream: BinaryIO) -> None:
        writer = self.raw.writer(name)
        try:
            while data := stream.read(CHUNK_SIZE):
                writer.write(data)
            writer.publish(name, overwrite=True)
        except BaseException:
            writer.abort()
            raise
