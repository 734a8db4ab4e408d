"""Bounded reading: the per-file budget, metered streams, windows and decompression.

Every byte the scanner reads goes through a `Metered` stream, which beats the worker's
lease and checks the time limit; every decompressed byte goes through `decompress_to`, which
counts it against the expanded-bytes and ratio limits. Nothing is held whole in memory:
decompressed content is spooled to a temporary file (small ones stay in memory), so each
later pass over it is a cheap seekable read and no stream is ever decompressed twice.
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import tempfile
import time
import zlib
from collections.abc import Callable
from typing import BinaryIO

from .pickles import Exceeded

BEAT_SECONDS = 0.5
BEAT_BYTES = 8 * 2**20
_PIECE = 1024 * 1024
_SPOOL_IN_MEMORY = 4 * 1024 * 1024

try:  # optional: zstd streams are reported as uninspected without it
    import zstandard
except ImportError:  # pragma: no cover - depends on the environment
    zstandard = None


class Budget:
    """The limits of one file's scan, and the lease beat."""

    def __init__(self, limits, beat: Callable[[], None]):
        self.limits = limits
        self._beat = beat
        now = time.monotonic()
        self.deadline = now + limits.seconds_per_file
        self._last_beat = now
        self._since_beat = 0
        self.expanded = 0
        self.members = 0
        beat()

    def tick(self, nbytes: int = 0) -> None:
        self._since_beat += nbytes
        now = time.monotonic()
        if now - self._last_beat >= BEAT_SECONDS or self._since_beat >= BEAT_BYTES:
            self._beat()
            self._last_beat, self._since_beat = now, 0
        if now > self.deadline:
            raise Exceeded(
                "seconds_per_file",
                f"scan took longer than {self.limits.seconds_per_file:g} s "
                "(limit seconds_per_file)",
            )

    def expand(self, nbytes: int, produced: int, consumed: int) -> None:
        """Count `nbytes` more decompressed bytes; `produced`/`consumed` are this stream's
        totals so far, for its ratio."""
        self.expanded += nbytes
        limits = self.limits
        if self.expanded > limits.max_expanded_bytes:
            raise Exceeded(
                "max_expanded_bytes",
                f"expanded beyond {limits.max_expanded_bytes} bytes (limit max_expanded_bytes)",
            )
        if produced > limits.ratio_floor and produced > limits.max_ratio * max(consumed, 1):
            raise Exceeded(
                "max_ratio",
                f"expanded beyond {limits.max_ratio:g}x its compressed size (limit max_ratio)",
            )

    def member(self) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise Exceeded(
                "max_members",
                f"more than {self.limits.max_members} archive members (limit max_members)",
            )


class Metered(io.RawIOBase):
    """A stream whose reads and seeks tick the budget."""

    def __init__(self, raw: BinaryIO, budget: Budget):
        self._raw = raw
        self._budget = budget
        try:
            self._seekable = bool(raw.seekable())
        except Exception:  # a stream that cannot say is read, not seeked
            self._seekable = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._seekable

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = _PIECE
        data = self._raw.read(n)
        self._budget.tick(len(data))
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        self._budget.tick()
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


class Window(io.RawIOBase):
    """Bytes [start, start + size) of a seekable stream, as a seekable stream of its own.
    Each window keeps its own position, so windows over one file can be read in turn."""

    def __init__(self, base: BinaryIO, start: int, size: int):
        self._base = base
        self._start = start
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        left = self._size - self._pos
        if n is None or n < 0 or n > left:
            n = left
        if n <= 0:
            return b""
        self._base.seek(self._start + self._pos)
        data = self._base.read(n)
        self._pos += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self._pos = offset
        elif whence == 1:
            self._pos += offset
        else:
            self._pos = self._size + offset
        self._pos = max(self._pos, 0)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:  # the base stream belongs to whoever opened it
        super().close()


def size_of(stream: BinaryIO) -> int | None:
    try:
        here = stream.tell()
        end = stream.seek(0, os.SEEK_END)
        stream.seek(here)
        return end
    except Exception:  # unseekable or unsized
        return None


def new_spool() -> tempfile.SpooledTemporaryFile:
    return tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)


def copy_to_spool(
    source: BinaryIO,
    budget: Budget,
    *,
    count_expanded: bool = False,
    consumed: Callable[[], int] | None = None,
):
    """Copy a stream into a new spool, counting as decompressed output if asked."""
    spool = new_spool()
    produced = 0
    try:
        while True:
            piece = source.read(_PIECE)
            if not piece:
                break
            spool.write(piece)
            produced += len(piece)
            budget.tick()
            if count_expanded:
                budget.expand(len(piece), produced, consumed() if consumed else 0)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool, produced


# -- decompressors ---------------------------------------------------------------------------


class DecompressError(Exception):
    """The stream does not decompress; `produced` bytes came out before the failure."""

    def __init__(self, message: str, produced: int):
        super().__init__(message)
        self.produced = produced


class _Counting(io.RawIOBase):
    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        return len(data)


def _stream_decompressor(kind: str):
    if kind == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if kind == "zlib":
        return zlib.decompressobj()
    if kind == "bz2":
        return bz2.BZ2Decompressor()
    if kind == "xz":
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    if kind == "lzma":
        return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE)
    raise ValueError(kind)


_MULTI_STREAM = {"gzip", "bz2", "xz"}
_MAGIC = {"gzip": b"\x1f\x8b", "bz2": b"BZh", "xz": b"\xfd7zXZ\x00"}
_CORRUPT = (zlib.error, OSError, lzma.LZMAError, EOFError, ValueError)


def decompress_to(kind: str, source: BinaryIO, budget: Budget):
    """Decompress `source` (positioned at the compressed data) into a spool.

    Returns (spool, produced bytes, note): note names trailing data after the stream, or is
    "". Raises DecompressError (the partial spool attached as `.spool`) when the data is not,
    or stops being, valid; the budget's Exceeded when a limit is crossed. gzip, bz2 and xz
    streams may be concatenated, as their tools and Python's modules read them."""
    counter = _Counting(source)
    spool = new_spool()
    produced = 0

    def out(data: bytes) -> None:
        nonlocal produced
        if data:
            spool.write(data)
            produced += len(data)
            budget.expand(len(data), produced, counter.count)
        budget.tick(len(data))

    try:
        if kind == "zstd":
            _zstd(counter, out)
            note = ""
        else:
            note = _decompress(kind, counter, out, lambda: produced)
    except DecompressError as exc:
        spool.seek(0)
        exc.spool = spool
        raise
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool, produced, note


def _zstd(counter: BinaryIO, out: Callable[[bytes], None]) -> None:
    if zstandard is None:
        raise DecompressError("zstd stream not inspected: no zstd decoder installed", 0)
    reader = zstandard.ZstdDecompressor().stream_reader(counter, read_across_frames=True)
    produced = 0
    while True:
        try:
            data = reader.read(_PIECE)
        except zstandard.ZstdError as exc:
            raise DecompressError(f"corrupt zstd stream: {exc}", produced) from exc
        if not data:
            return
        produced += len(data)
        out(data)


def _decompress(kind: str, counter: BinaryIO, out, produced: Callable[[], int]) -> str:
    inflater = _stream_decompressor(kind)
    zlib_like = kind in ("gzip", "zlib")
    pending = b""
    while True:
        if inflater.eof:
            tail = inflater.unused_data + (inflater.unconsumed_tail if zlib_like else b"")
            tail = tail or counter.read(64 * 1024)
            if not tail:
                return ""
            if kind in _MULTI_STREAM:
                stripped = tail.lstrip(b"\0") if kind != "bz2" else tail
                while not stripped and tail:  # zero padding (gzip, xz): look further
                    tail = counter.read(64 * 1024)
                    stripped = tail.lstrip(b"\0")
                if not stripped:
                    return ""
                if stripped.startswith(_MAGIC[kind]):
                    inflater, pending = _stream_decompressor(kind), stripped
                    continue
            return f"data after the end of the {kind} stream"
        if zlib_like:
            if not pending:
                pending = counter.read(64 * 1024)
                if not pending:
                    try:
                        out(inflater.flush())
                    except _CORRUPT as exc:
                        raise DecompressError(f"corrupt {kind} stream: {exc}", produced()) from exc
                    if not inflater.eof:
                        raise DecompressError(f"truncated {kind} stream", produced())
                    continue
        elif inflater.needs_input and not pending:
            pending = counter.read(64 * 1024)
            if not pending:
                raise DecompressError(f"truncated {kind} stream", produced())
        try:
            data = inflater.decompress(pending, _PIECE)
        except _CORRUPT as exc:
            raise DecompressError(f"corrupt {kind} stream: {exc}", produced()) from exc
        pending = inflater.unconsumed_tail if zlib_like else b""
        out(data)
