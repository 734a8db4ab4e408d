"""Local-file backend: blobs under <root>/sha256/ab/cd/<digest>.

Bytes go to a temporary file on the store's own file system while they are hashed, are
fsynced, and are renamed into place, so a blob's name never shows partial content.
"""

import contextlib
import ctypes
import errno
import functools
import hashlib
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from registry.errors import ChecksumMismatch, InsufficientStorage, TooLarge

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
from .objects import ObjectStore, ObjectWriter

FULL = (errno.ENOSPC, errno.EDQUOT)


def full_disk_is_507(method):
    """A write that finds the disk (or quota) full says so, as a 507 the client can retry
    once space is freed, instead of a 500. Whatever it wrote is discarded by its caller."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except OSError as exc:
            if exc.errno not in FULL:
                raise
            raise InsufficientStorage(
                "The blob store is out of space. Nothing was kept of this write; retry once "
                "space is freed (an interrupted upload resumes where HEAD says). Operators: "
                "`manage.py gc_store` lists what it keeps and how to free it.",
                {"errno": errno.errorcode[exc.errno]},
            ) from None

    return wrapper


class _LimitedReader:
    """A file object cut to `length` bytes, closing the file with it."""

    def __init__(self, file: BinaryIO, length: int):
        self._file, self._left = file, length

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        size = self._left if size is None or size < 0 else min(size, self._left)
        data = self._file.read(size)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _LocalWriter(BlobWriter):
    def __init__(self, store: "LocalBlobStore", max_size: int | None):
        self._store = store
        self._max_size = max_size
        self._hash = hashlib.sha256()
        self.size = 0
        self._tmp = store._tmp_path()
        self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)

    @full_disk_is_507
    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._max_size is not None and self.size > self._max_size:
            raise TooLarge(f"File exceeds the limit of {self._max_size} bytes.")
        self._hash.update(data)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    @full_disk_is_507
    def commit(self, expected_sha256: str | None = None, expected_size: int | None = None):
        digest = self._hash.hexdigest()
        try:
            check_expected(digest, self.size, expected_sha256, expected_size)
            os.fsync(self._fd)
        except BaseException:
            self.abort()
            raise
        os.close(self._fd)
        self._fd = -1
        self._store._publish(self._tmp, digest)
        return BlobInfo(digest, self.size)

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._tmp.unlink(missing_ok=True)


class LocalBlobStore(BlobStore):
    # Hash state of in-progress uploads kept in this process, so that a chunked upload
    # whose chunks arrive here in order is not read back to be hashed at the end.
    _HASHER_SLOTS = 64

    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()
        for sub in ("sha256", "tmp", "uploads"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._hashers: OrderedDict[str, tuple[int, object]] = OrderedDict()
        self._lock = threading.Lock()

    # Paths ---------------------------------------------------------------------------
    def _blob_path(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / "sha256" / digest[:2] / digest[2:4] / digest

    def _upload_path(self, upload_id: str) -> Path:
        return self.root / "uploads" / check_upload_id(upload_id)

    def _tmp_path(self) -> Path:
        return self.root / "tmp" / f"{os.getpid()}-{threading.get_ident()}-{os.urandom(8).hex()}"

    def _publish(self, tmp: Path, digest: str) -> None:
        final = self._blob_path(digest)
        with self.blob_lock(digest):  # see guard.py: GC cannot delete it under our feet
            if final.exists():  # identical content is stored once; touch it for GC
                try:
                    os.utime(final)
                    tmp.unlink(missing_ok=True)
                    return
                except FileNotFoundError:  # deleted by hand meanwhile: store ours
                    pass
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            _fsync_dir(final.parent)

    # Blobs ---------------------------------------------------------------------------
    def writer(self, max_size: int | None = None) -> BlobWriter:
        return _LocalWriter(self, max_size)

    def open(self, digest: str, offset: int = 0, length: int | None = None) -> BinaryIO:
        file = open(self._blob_path(digest), "rb")  # noqa: SIM115 - returned to the caller
        if offset:
            file.seek(offset)
        if length is None:
            return file  # a real file lets the WSGI server use sendfile
        return _LimitedReader(file, length)  # type: ignore[return-value]

    def exists(self, digest: str) -> bool:
        return self._blob_path(digest).is_file()

    def size(self, digest: str) -> int:
        return self._blob_path(digest).stat().st_size

    def delete(self, digest: str) -> None:
        self._blob_path(digest).unlink(missing_ok=True)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def digests(self) -> Iterator[str]:
        for path in (self.root / "sha256").glob("*/*/*"):
            if path.is_file() and len(path.name) == 64:
                yield path.name

    # Resumable uploads ---------------------------------------------------------------
    @full_disk_is_507
    def write_part(self, upload_id: str, offset: int, stream: BinaryIO, length: int) -> None:
        path = self._upload_path(upload_id)
        hasher = self._take_hasher(upload_id, offset)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
        try:
            with _PieceSink(fd, offset, hasher) as sink:
                for data in body_pieces(stream, length):
                    sink.put(data)
        finally:
            os.close(fd)
        if hasher is not None:
            self._keep_hasher(upload_id, offset + length, hasher)

    @full_disk_is_507
    def finish_upload(self, upload_id: str, size: int, expected_sha256: str) -> BlobInfo:
        path = self._upload_path(upload_id)
        if not path.exists():  # a zero-byte file never had a part written
            path.touch()
        with self._lock:
            cached = self._hashers.pop(upload_id, None)
        with open(path, "r+b") as file:
            file.truncate(size)
            if cached is not None and cached[0] == size:
                digest = cached[1].hexdigest()
            else:
                digest = _hash_file(file)
            os.fsync(file.fileno())
        try:
            check_expected(digest, size, expected_sha256, None)
        except ChecksumMismatch:
            path.unlink(missing_ok=True)
            raise
        self._publish(path, digest)
        return BlobInfo(digest, size)

    def abort_upload(self, upload_id: str) -> None:
        with self._lock:
            self._hashers.pop(upload_id, None)
        self._upload_path(upload_id).unlink(missing_ok=True)

    # Care (registry/services/store_care.py): a blob's mtime is its last touch -----------
    def last_touched(self, digest: str) -> float | None:
        try:
            return self._blob_path(digest).stat().st_mtime
        except FileNotFoundError:
            return None

    def staged_uploads(self) -> Iterator[tuple[str, float]]:
        for path in (self.root / "uploads").iterdir():
            with contextlib.suppress(FileNotFoundError):
                yield path.name, path.stat().st_mtime

    def leftovers(self) -> Iterator[tuple[str, float]]:
        for path in (self.root / "tmp").iterdir():
            with contextlib.suppress(FileNotFoundError):
                yield f"tmp/{path.name}", path.stat().st_mtime

    def remove_leftover(self, name: str) -> None:
        folder, _, leaf = name.partition("/")
        if folder != "tmp" or not leaf or "/" in leaf or leaf in (".", ".."):
            raise ValueError(f"not a leftover: {name!r}")
        (self.root / "tmp" / leaf).unlink(missing_ok=True)

    def stored_objects(self, digest: str) -> list[str]:
        self._blob_path(digest)  # validates the digest
        return [f"sha256/{digest[:2]}/{digest[2:4]}/{digest}"]

    def _stored_path(self, name: str) -> Path:
        digest = name.rsplit("/", 1)[-1]
        if name != f"sha256/{digest[:2]}/{digest[2:4]}/{digest}":
            raise ValueError(f"not a blob of this store: {name!r}")
        return self._blob_path(digest)

    def read_stored(self, name: str) -> BinaryIO:
        return open(self._stored_path(name), "rb")

    @full_disk_is_507
    def write_stored(self, name: str, stream: BinaryIO) -> None:
        final, tmp = self._stored_path(name), self._tmp_path()
        with open(tmp, "xb") as file:
            shutil.copyfileobj(stream, file, CHUNK_SIZE)
            file.flush()
            os.fsync(file.fileno())
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)

    def _take_hasher(self, upload_id: str, offset: int):
        if offset == 0:
            return hashlib.sha256()
        with self._lock:
            cached = self._hashers.get(upload_id)
        if cached is not None and cached[0] == offset:
            return cached[1].copy()  # the cache is only updated once the part is complete
        return None

    def _keep_hasher(self, upload_id: str, offset: int, hasher) -> None:
        with self._lock:
            self._hashers[upload_id] = (offset, hasher)
            self._hashers.move_to_end(upload_id)
            while len(self._hashers) > self._HASHER_SLOTS:
                self._hashers.popitem(last=False)


class _PieceSink:
    """Writes a part's pieces at their offsets and hashes them, on two helper threads.

    Receiving a piece, writing it and hashing it all release the GIL, so while the
    request's thread receives piece n+1, one helper writes piece n and another hashes it:
    on two cores the three overlap instead of adding up (the write alone cost ~1 s/GiB
    here). Order is kept and memory stays bounded: `put` waits until the previous piece
    is written and hashed before handing over the next one.
    """

    def __init__(self, fd: int, offset: int, hasher):
        self._fd, self._position, self._flushed = fd, offset, offset
        self._hasher = hasher
        self._writing = ThreadPoolExecutor(1, thread_name_prefix="part-write")
        self._hashing = ThreadPoolExecutor(1, thread_name_prefix="part-sha256")
        self._pending: list = []

    def put(self, data: bytes) -> None:
        self.wait()
        self._pending = [self._writing.submit(self._write, data, self._position)]
        if self._hasher is not None:
            self._pending.append(self._hashing.submit(self._hasher.update, data))
        self._position += len(data)

    def _write(self, data: bytes, position: int) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, position)
            view, position = view[written:], position + written
        if position - self._flushed >= _WRITEBACK_STEP:
            _start_writeback(self._fd, self._flushed, position - self._flushed)
            self._flushed = position

    def wait(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if exc_type is None:
                self.wait()
                _start_writeback(self._fd, self._flushed, self._position - self._flushed)
        finally:  # nothing may still write once the caller closes the file
            self._writing.shutdown(wait=True)
            self._hashing.shutdown(wait=True)


# The final fsync of a multi-GiB upload used to wait for every byte at once (half a
# second per GiB here). Asking the kernel to start writing each few MiB as they arrive
# (Linux sync_file_range, SYNC_FILE_RANGE_WRITE: start, do not wait) spreads that work
# over the upload; durability still comes only from the fsync in finish_upload.
_WRITEBACK_STEP = 8 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2
try:
    _sync_file_range = ctypes.CDLL(None, use_errno=True).sync_file_range
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
except (AttributeError, OSError):  # not Linux: the final fsync does it all
    _sync_file_range = None


def _start_writeback(fd: int, offset: int, length: int) -> None:
    if _sync_file_range is not None and length > 0:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # advisory: result unused


def _hash_file(file) -> str:
    file.seek(0)
    hasher = hashlib.sha256()
    while chunk := file.read(CHUNK_SIZE):
        hasher.update(chunk)
    return hasher.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _FileObjectWriter(ObjectWriter):
    def __init__(self, objects: "LocalObjects"):
        self._objects = objects
        self._tmp = objects.root / "tmp" / f"{os.getpid()}-{os.urandom(12).hex()}"
        self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        self._flushed = False

    @full_disk_is_507
    def write(self, data: bytes) -> None:
        self._flushed = False
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    @full_disk_is_507
    def flush(self) -> None:
        if not self._flushed:
            os.fsync(self._fd)
            self._flushed = True

    def publish(self, name: str, overwrite: bool = False) -> bool:
        self.flush()
        os.close(self._fd)
        self._fd = -1
        final = self._objects._path(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            if overwrite:
                os.replace(self._tmp, final)
            else:
                # link() fails if the name exists: the first complete copy wins, and a
                # reader never sees one object's bytes swapped for another's.
                try:
                    os.link(self._tmp, final)
                except FileExistsError:
                    return False
            _fsync_dir(final.parent)
            return True
        finally:
            self._tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._tmp.unlink(missing_ok=True)


class LocalObjects(ObjectStore):
    """Named objects as files under `root`, written to tmp/ and renamed or linked into place.

    Used under encryption (`ContentStore(EncryptedObjects(LocalObjects(root)))`); the plain
    local store above keeps its faster single-file staging.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        # Names are built by this package, never taken from a request; refuse anything odd.
        parts = name.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"not an object name: {name!r}")
        return self.root.joinpath(*parts)

    def writer(self, target: str | None = None) -> ObjectWriter:
        return _FileObjectWriter(self)

    def read(self, name: str, offset: int = 0, length: int | None = None) -> BinaryIO:
        file = open(self._path(name), "rb")  # noqa: SIM115 - returned to the caller
        file.seek(offset)
        if length is None:
            return file
        return _LimitedReader(file, length)  # type: ignore[return-value]

    def size(self, name: str) -> int:
        return self._path(name).stat().st_size

    def modified(self, name: str) -> float:
        return self._path(name).stat().st_mtime

    def touch(self, name: str) -> None:
        # A time stamp, not data: no fsync (after a crash a blob only looks older to GC,
        # and the in-flight window is far longer than a reboot).
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def entries(self, prefix: str) -> Iterator[tuple[str, int, float]]:
        for name, _ in self.list(prefix):
            with contextlib.suppress(FileNotFoundError):
                stat = self._path(name).stat()
                yield name, stat.st_size, stat.st_mtime

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        if not prefix.endswith("/"):
            raise ValueError("a prefix names a folder and ends with '/'")
        shutil.rmtree(self._path(prefix.rstrip("/")), ignore_errors=True)

    def list(self, prefix: str, start_after: str = "") -> Iterator[tuple[str, int]]:
        if not prefix.endswith("/"):
            raise ValueError("a prefix names a folder and ends with '/'")
        base = self._path(prefix.rstrip("/"))
        for path in base.rglob("*"):
            name = path.relative_to(self.root).as_posix()
            if name > start_after and path.is_file():
                yield name, path.stat().st_size
