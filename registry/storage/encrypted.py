"""Encryption at rest: every stored object is AES-256-GCM in segments under its own data key.

An encrypted object is a header followed by segments:

    header  = b"MGE1" | segment size (u32) | key id (16 random bytes) | nonce prefix (7 random)
    segment = AES-GCM(data key, nonce = prefix | index (u32) | last flag (u8), aad = header)

Each segment carries `segment size` plaintext bytes (the last one 0 to that many) plus a
16-byte tag. With the index and the last-segment flag in the nonce, reordered, dropped,
truncated or appended segments fail authentication (the STREAM construction, as in Tink's
streaming AEAD), and a ranged read decrypts only the segments it covers.

The data key is wrapped by the master key (keys.py) into a small record beside the object,
`keys/<name>/<key id>`, with the object's name bound in as associated data: a record moved
to another object does not unwrap, and `rotate_keys` rewrites records, never objects.
Blobs are still named by the sha256 of their plaintext (objects.py), so identical files
are stored once.
"""

import secrets
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .base import BlobCorrupt
from .keys import Keyring, KeyUnavailable
from .objects import ObjectStore, ObjectWriter

MAGIC = b"MGE1"
_HEADER = struct.Struct(">4sI16s7s")
HEADER_SIZE = _HEADER.size
SEGMENT_SIZE = 1024 * 1024
TAG_SIZE = 16
_MAX_SEGMENT_SIZE = 16 * 1024 * 1024  # bounds what a forged header can make us allocate
_KEY_CACHE_SLOTS = 256


@dataclass(frozen=True)
class _Header:
    raw: bytes
    segment_size: int
    key_id: bytes
    prefix: bytes

    @classmethod
    def new(cls, key_id: bytes, prefix: bytes) -> "_Header":
        return cls(_HEADER.pack(MAGIC, SEGMENT_SIZE, key_id, prefix), SEGMENT_SIZE, key_id, prefix)

    @classmethod
    def parse(cls, raw: bytes, name: str) -> "_Header":
        if len(raw) != HEADER_SIZE:
            raise BlobCorrupt(f"{name}: too short to be an encrypted object")
        magic, segment_size, key_id, prefix = _HEADER.unpack(raw)
        if magic != MAGIC:
            raise BlobCorrupt(f"{name}: not an encrypted object (bad header)")
        if not 0 < segment_size <= _MAX_SEGMENT_SIZE:
            raise BlobCorrupt(f"{name}: impossible segment size {segment_size}")
        return cls(raw, segment_size, key_id, prefix)

    def nonce(self, index: int, last: bool) -> bytes:
        return self.prefix + struct.pack(">IB", index, 1 if last else 0)


def _layout(stored_size: int, segment_size: int, name: str) -> tuple[int, int]:
    """(plaintext size, number of segments) of an object of `stored_size` bytes."""
    body = stored_size - HEADER_SIZE
    sealed = segment_size + TAG_SIZE
    count = -(-body // sealed)
    if body < TAG_SIZE or body - (count - 1) * sealed < TAG_SIZE:
        raise BlobCorrupt(f"{name}: stored size {stored_size} is not a whole number of segments")
    return body - count * TAG_SIZE, count


def _key_context(name: str, key_id: bytes) -> bytes:
    return b"modelgate data key\0" + name.encode() + b"\0" + key_id


def _read_exactly(stream: BinaryIO, size: int, name: str) -> bytes:
    chunks, left = [], size
    while left > 0:
        data = stream.read(left)
        if not data:
            raise BlobCorrupt(f"{name}: ends {left} bytes early")
        chunks.append(data)
        left -= len(data)
    return b"".join(chunks)


@cache
def _record_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=4, thread_name_prefix="key-records")


class _EncryptingWriter(ObjectWriter):
    def __init__(self, objects: "EncryptedObjects", target: str | None, size: int | None = None):
        self._objects = objects
        if size is None:
            self._inner = objects.inner.writer(target)
        else:  # the sealed size: the header, and a tag per segment (at least one)
            sealed = HEADER_SIZE + size + TAG_SIZE * max(1, -(-size // SEGMENT_SIZE))
            self._inner = objects.inner.sized_writer(target, sealed)
        self._data_key = AESGCM.generate_key(bit_length=256)
        self._aead = AESGCM(self._data_key)
        self._header = _Header.new(secrets.token_bytes(16), secrets.token_bytes(7))
        self._buffer: bytearray | memoryview = bytearray()
        self._index = 0
        self._inner.write(self._header.raw)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            # A full segment is sealed only when more bytes arrive: until then it may be last.
            if len(self._buffer) == SEGMENT_SIZE:
                self._seal(last=False)
            room = SEGMENT_SIZE - len(self._buffer)
            if room == SEGMENT_SIZE and len(view) >= room and isinstance(data, bytes):
                self._buffer = view[:room]  # a whole segment of immutable bytes: no copy
            else:
                self._buffer += view[:room]
            view = view[room:]

    def _seal(self, last: bool) -> None:
        nonce = self._header.nonce(self._index, last)
        self._inner.write(self._aead.encrypt(nonce, self._buffer, self._header.raw))
        self._buffer = bytearray()
        self._index += 1

    def publish(self, name: str, overwrite: bool = False) -> bool:
        self._seal(last=True)
        key_id = self._header.key_id
        record = self._objects.record_name(name, key_id)
        inner = self._objects.inner
        # The record is durable first, so a published object always has its key beside it;
        # it is written (and fsynced) while the object's own bytes are flushed to disk.
        wrapped = self._objects.keyring.wrap(self._data_key, _key_context(name, key_id))
        record_write = _record_pool().submit(inner.put_bytes, record, wrapped)
        try:
            try:
                self._inner.flush()
            finally:
                record_write.result()
            published = self._inner.publish(name, overwrite)
        except BaseException:
            inner.delete(record)
            raise
        if not published:
            inner.delete(record)
        elif overwrite:  # records of the replaced object are of no use any more
            for other, _ in inner.list(f"keys/{name}/"):
                if other != record:
                    inner.delete(other)
        return published

    def abort(self) -> None:
        self._inner.abort()


class _DecryptingReader:
    """Plaintext bytes [offset, offset+length) of an encrypted object, one segment at a time.

    The first segment is decrypted on opening, so a damaged header, key record or first
    segment fails before a response starts; any later damage stops the stream with
    BlobCorrupt instead of returning bytes that failed authentication.
    """

    def __init__(self, objects: "EncryptedObjects", name: str, offset: int, length: int | None):
        inner = objects.inner
        self._name = name
        self._stored = inner.size(name)
        with inner.read(name, 0, HEADER_SIZE) as stream:
            self._header = _Header.parse(_read_exactly(stream, HEADER_SIZE, name), name)
        self._aead = objects.data_key(name, self._header)
        size, self._count = _layout(self._stored, self._header.segment_size, name)
        offset = min(max(offset, 0), size)
        end = size if length is None else min(offset + max(length, 0), size)
        self._left = end - offset
        self._buffer, self._position, self._stream = b"", 0, None
        segment = self._header.segment_size
        self._index = offset // segment if size else 0
        if self._left == 0 and size:
            return  # nothing to read, nothing to decrypt
        last = (end - 1) // segment if self._left else self._index
        start = HEADER_SIZE + self._index * (segment + TAG_SIZE)
        stop = min(HEADER_SIZE + (last + 1) * (segment + TAG_SIZE), self._stored)
        self._stream = inner.read(name, start, stop - start)
        try:
            self._next_segment()
        except BaseException:
            self.close()
            raise
        self._position = offset - (self._index - 1) * segment

    def _next_segment(self) -> None:
        index, segment = self._index, self._header.segment_size
        last = index == self._count - 1
        sealed = segment + TAG_SIZE
        if last:  # whatever remains, down to a bare tag
            sealed = self._stored - HEADER_SIZE - index * (segment + TAG_SIZE)
        ciphertext = _read_exactly(self._stream, sealed, self._name)
        try:
            self._buffer = self._aead.decrypt(
                self._header.nonce(index, last), ciphertext, self._header.raw
            )
        except InvalidTag:
            raise BlobCorrupt(
                f"{self._name}: segment {index} failed authentication (altered on storage)"
            ) from None
        self._index, self._position = index + 1, 0

    def read(self, size: int = -1) -> bytes:
        wanted = self._left if size is None or size < 0 else min(size, self._left)
        chunks = []
        while wanted > 0:
            if self._position >= len(self._buffer):
                self._next_segment()
            chunk = self._buffer[self._position : self._position + wanted]
            self._position += len(chunk)
            self._left -= len(chunk)
            wanted -= len(chunk)
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Rotation:
    rewrapped: int = 0
    current: int = 0
    failed: list[str] = field(default_factory=list)


class EncryptedObjects(ObjectStore):
    """Encrypts everything written to `inner` and authenticates everything read from it."""

    def __init__(self, inner: ObjectStore, keyring: Keyring):
        self.inner, self.keyring = inner, keyring
        self._keys: OrderedDict[tuple[str, bytes], AESGCM] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def record_name(name: str, key_id: bytes) -> str:
        return f"keys/{name}/{key_id.hex()}"

    def data_key(self, name: str, header: _Header) -> AESGCM:
        # Unwrapped data keys are kept for a while: a ranged read must not fetch its record
        # every time. Rotation changes only the wrapping, never a data key.
        slot = (name, header.key_id)
        with self._lock:
            if slot in self._keys:
                self._keys.move_to_end(slot)
                return self._keys[slot]
        try:
            record = self.inner.get_bytes(self.record_name(name, header.key_id))
        except FileNotFoundError:
            raise BlobCorrupt(f"{name}: its data key record is missing") from None
        try:
            aead = AESGCM(self.keyring.unwrap(record, _key_context(name, header.key_id)))
        except KeyUnavailable as exc:
            raise KeyUnavailable(f"{name}: {exc}") from None
        except BlobCorrupt as exc:
            raise BlobCorrupt(f"{name}: {exc}") from None
        with self._lock:
            self._keys[slot] = aead
            while len(self._keys) > _KEY_CACHE_SLOTS:
                self._keys.popitem(last=False)
        return aead

    def writer(self, target: str | None = None) -> ObjectWriter:
        return _EncryptingWriter(self, target)

    def sized_writer(self, name: str, size: int) -> ObjectWriter:
        return _EncryptingWriter(self, name, size)

    def read(self, name: str, offset: int = 0, length: int | None = None) -> BinaryIO:
        return _DecryptingReader(self, name, offset, length)  # type: ignore[return-value]

    def size(self, name: str) -> int:
        with self.inner.read(name, 0, HEADER_SIZE) as stream:
            header = _Header.parse(_read_exactly(stream, HEADER_SIZE, name), name)
        return _layout(self.inner.size(name), header.segment_size, name)[0]

    def exists(self, name: str) -> bool:
        return self.inner.exists(name)

    def modified(self, name: str) -> float:
        return self.inner.modified(name)

    def entries(self, prefix: str) -> Iterator[tuple[str, int, float]]:
        return self.inner.entries(prefix)

    def delete(self, name: str) -> None:
        self.inner.delete(name)
        self.inner.delete_prefix(f"keys/{name}/")

    def delete_prefix(self, prefix: str) -> None:
        self.inner.delete_prefix(prefix)
        self.inner.delete_prefix(f"keys/{prefix}")

    def list(self, prefix: str, start_after: str = "") -> Iterator[tuple[str, int]]:
        return self.inner.list(prefix, start_after)

    def rotate(self) -> Rotation:
        """Re-wrap every data key not yet under the current master key; safe to re-run."""
        report = Rotation()
        for record, _ in self.inner.list("keys/"):
            name, _, key_hex = record.removeprefix("keys/").rpartition("/")
            wrapped = self.inner.get_bytes(record)
            if self.keyring.is_current(wrapped):
                report.current += 1
                continue
            try:
                context = _key_context(name, bytes.fromhex(key_hex))
                self.inner.put_bytes(record, self.keyring.rewrap(wrapped, context))
            except (KeyUnavailable, BlobCorrupt, ValueError) as exc:
                report.failed.append(f"{name}: {exc}")
                continue
            report.rewrapped += 1
        return report
