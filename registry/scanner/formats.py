"""Finding the pickle streams in a file by its magic bytes: raw pickles, zip archives
(PyTorch checkpoints, .npz), NumPy .npy files and compressed joblib dumps.

Each stream found is walked with the pickle walker and reported as events: the stream's
label when it holds serialized content, each global it imports, and each problem met.
"""

from __future__ import annotations

import ast
import bz2
import gzip
import io
import lzma
import os
import shutil
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, closing, contextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import BinaryIO

from .pickles import Import, PickleError, Reader, Walker, is_seekable, load_view

OpenStream = Callable[[], BinaryIO]
Opener = Callable[[Reader], BinaryIO | None]
Reopen = Callable[[], AbstractContextManager[Reader]]

# Names that claim to be a pickle: without magic bytes (protocol 0/1 has none) they are
# still walked, and failing to parse is an error. Other weight files (.bin, .pt, .ckpt)
# are judged by their bytes alone: raw tensors are not pickles.
PICKLE_EXTENSIONS = frozenset({".pkl", ".pickle", ".joblib", ".p"})
# Zip members worth opening; the rest of a PyTorch archive is raw tensor storage.
MEMBER_EXTENSIONS = (".pkl", ".pickle", ".joblib", ".npy")
# First bytes of a protocol 0/1 pickle: MARK, empty containers, GLOBAL, numbers, None,
# strings. Files starting so without a pickle extension are tried, and kept if they parse.
_PROTOCOL_0_1_STARTS = frozenset(b"(])}cKJMILFGNSVXUT")
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"
_HEAD = 16
_MAX_NPY_HEADER = 1024 * 1024
_SPOOL_IN_MEMORY = 1024 * 1024
# joblib < 0.10 wrote "ZF", the data length as hex padded to this width, then zlib data.
_ZFILE_PREFIX = b"ZF"
_ZFILE_LENGTH = len(hex(2**64))
_COMPRESSION_EXTENSIONS = frozenset({".gz", ".z", ".bz2", ".xz", ".lzma"})
_LOAD_VIEW_NOTE = "met only by pickle.load, which reads joblib's array bytes as opcodes"


@dataclass(frozen=True)
class Problem:
    offset: int
    message: str


@dataclass(frozen=True)
class Event:
    """`item` is None when `label` holds serialized content, else what was found in it."""

    label: str
    item: Import | Problem | None = None


def events(path: str, open_stream: OpenStream) -> Iterator[Event]:
    """Every event for the file at `path` (a name only: the bytes come from open_stream)."""
    yield from _guarded(path, _stream_events(path, path, open_stream, in_archive=False))


def _guarded(label: str, found: Iterator[Event]) -> Iterator[Event]:
    """`found`, ending in a problem if the stream itself cannot be read (a bad zip CRC...)."""
    try:
        yield from found
    except PickleError as exc:
        yield Event(label, Problem(exc.offset, f"unreadable stream: {exc.message}"))


def _stream_events(
    label: str, name: str, open_stream: OpenStream, *, in_archive: bool
) -> Iterator[Event]:
    extension, inner_extension = _extensions(name)
    with ExitStack() as stack:
        reader = Reader(stack.enter_context(closing(open_stream())))
        head = reader.peek(_HEAD)
        if head.startswith(_ZIP_MAGICS) and not in_archive:  # nested zips are not scanned
            stack.close()  # zipfile opens its own stream
            yield from _zip_events(label, open_stream)
            return
        opener = _decompressor(head)
        if opener is None:
            reopen = partial(_reopened, open_stream, None)
            yield from _content_events(label, reader, extension, reopen)
            return
        inner = _decompressed(stack, reader, opener)
        if inner is not None:
            reopen = partial(_reopened, open_stream, opener)
            yield from _content_events(label, inner, inner_extension, reopen)
            return
    # A compressor's magic bytes, but not its data: look at the file as it is.
    reopen = partial(_reopened, open_stream, None)
    with reopen() as reader:
        yield from _content_events(label, reader, extension, reopen)


def _decompressed(stack: ExitStack, reader: Reader, opener: Opener) -> Reader | None:
    """A reader of the decompressed stream, or None if the data does not decompress."""
    stream = opener(reader)
    if stream is None:
        return None
    inner = Reader(stack.enter_context(closing(stream)))
    try:
        inner.peek(_HEAD)
    except PickleError:
        return None
    return inner


@contextmanager
def _reopened(open_stream: OpenStream, opener: Opener | None) -> Iterator[Reader]:
    """The same content read again from its start, decompressed like the first time."""
    with ExitStack() as stack:
        reader = Reader(stack.enter_context(closing(open_stream())))
        if opener is not None:
            reader = _decompressed(stack, reader, opener)
            if reader is None:
                raise PickleError(0, "the stream no longer decompresses")
        yield reader


def _extensions(name: str) -> tuple[str, str]:
    """The extension of `name`, and the one under a compression suffix ("x.pkl.gz": ".pkl")."""
    stem, extension = os.path.splitext(name)
    extension = extension.lower()
    if extension in _COMPRESSION_EXTENSIONS:
        return extension, os.path.splitext(stem)[1].lower()
    return extension, extension


def _content_events(label: str, reader: Reader, extension: str, reopen: Reopen) -> Iterator[Event]:
    head = reader.peek(_HEAD)
    if head.startswith(_NPY_MAGIC):
        yield from _npy_events(label, reader)
    elif _is_pickle_header(head):
        yield from _pickle_events(label, reader, sniffed=False, reopen=reopen)
    elif not head or _is_known_non_pickle(head):
        return
    elif extension in PICKLE_EXTENSIONS:
        # The extension is the evidence: failing to parse is then an error.
        yield from _pickle_events(label, reader, sniffed=False, reopen=reopen)
    elif head[0] in _PROTOCOL_0_1_STARTS:
        yield from _pickle_events(label, reader, sniffed=True, reopen=reopen)


def _is_pickle_header(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _is_known_non_pickle(head: bytes) -> bool:
    """Formats that share pickle extensions (.bin) but are never pickles."""
    if head.startswith((b"GGUF", b"\x89HDF\r\n\x1a\n")):
        return True
    # safetensors: an 8-byte little-endian header size, then the JSON header.
    return head[8:10] == b'{"'


def _pickle_events(
    label: str, reader: Reader, *, sniffed: bool, reopen: Reopen | None = None
) -> Iterator[Event]:
    """Walk the pickles in `reader`. A sniffed stream (no magic, no pickle extension) only
    counts as a pickle once it names a global or completes.

    With `reopen`, the stream may be a joblib dump and is walked as joblib.load reads it;
    if that differs from how pickle.load reads it, it is then read again that way too.
    """
    walker = Walker(reader, joblib=reopen is not None)
    announced = False
    try:
        for found in walker:
            if not announced:
                yield Event(label)
                announced = True
            yield Event(label, found)
    except PickleError as exc:
        if sniffed and not announced:
            return  # it was never a pickle: text that happens to start like one
        if not announced:
            yield Event(label)
        yield Event(label, Problem(exc.offset, f"unreadable pickle: {exc.message}"))
    else:
        if not announced:
            yield Event(label)
    if reopen is not None and walker.joblib_data_at is not None:
        yield from _load_view_events(label, reopen, walker.joblib_data_at)


def _load_view_events(label: str, reopen: Reopen, after: int) -> Iterator[Event]:
    """What pickle.load meets past `after`: it reads joblib's array bytes as opcodes, so a
    file can hide there a payload that joblib.load never runs but pickle.load does."""
    try:
        with reopen() as reader:
            for found in load_view(reader, after):
                yield Event(label, replace(found, note=_LOAD_VIEW_NOTE))
    except PickleError as exc:
        message = f"cannot follow how pickle.load reads this file: {exc.message}"
        yield Event(label, Problem(exc.offset, message))


# -- compression ---------------------------------------------------------------------------


class _ReaderFile(io.RawIOBase):
    """A Reader seen as a readable file, for decompressors that read through it."""

    def __init__(self, reader: Reader):
        self._reader = reader

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self._reader.read_some(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _ZlibFile(io.RawIOBase):
    """A raw zlib stream (joblib's default compressor) decompressed as it is read."""

    def __init__(self, source: BinaryIO):
        self._source = source
        self._inflater = zlib.decompressobj()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:
        while not self._inflater.eof:
            pending = self._inflater.unconsumed_tail or self._source.read(64 * 1024)
            if not pending:
                raise EOFError("compressed stream ended early")
            # max_length bounds the output: a small input may inflate enormously.
            data = self._inflater.decompress(pending, len(buffer))
            if data:
                buffer[: len(data)] = data
                return len(data)
        return 0


def _gzip(source: BinaryIO) -> BinaryIO:
    return gzip.GzipFile(fileobj=source, mode="rb")


def _bz2(source: BinaryIO) -> BinaryIO:
    return bz2.BZ2File(source)


def _xz(source: BinaryIO) -> BinaryIO:
    return lzma.LZMAFile(source, format=lzma.FORMAT_XZ)


def _lzma(source: BinaryIO) -> BinaryIO:
    return lzma.LZMAFile(source, format=lzma.FORMAT_ALONE)


def _zlib(source: BinaryIO) -> BinaryIO:
    return io.BufferedReader(_ZlibFile(source))


def _zfile(source: io.BufferedReader) -> BinaryIO:
    header = source.read(len(_ZFILE_PREFIX) + _ZFILE_LENGTH)
    int(header[len(_ZFILE_PREFIX) :], 16)  # a ValueError here: not a z-file after all
    if source.peek(1)[:1] == b" ":
        source.read(1)  # joblib <= 0.8.4 under Python 2 wrote one more character
    return _zlib(source)


def _decompressor(head: bytes) -> Opener | None:
    """How to decompress a stream starting with `head`, from the magic bytes joblib uses."""
    if head.startswith(b"\x1f\x8b\x08"):
        raw = _gzip
    elif head.startswith(b"BZh") and head[3:4].isdigit():
        raw = _bz2
    elif head.startswith(b"\xfd7zXZ\x00"):
        raw = _xz
    elif head.startswith(b"\x5d\x00\x00"):
        raw = _lzma
    elif len(head) >= 2 and head[0] == 0x78 and int.from_bytes(head[:2], "big") % 31 == 0:
        raw = _zlib
    elif head.startswith(_ZFILE_PREFIX):
        raw = _zfile
    else:
        return None
    return lambda reader: _opened(raw, io.BufferedReader(_ReaderFile(reader)))


def _opened(raw: Callable[[BinaryIO], BinaryIO], source: BinaryIO) -> BinaryIO | None:
    try:
        return raw(source)
    except Exception:  # whatever a decompressor raises on bad input: not compressed after all
        return None


# -- NumPy .npy ----------------------------------------------------------------------------


def _npy_events(label: str, reader: Reader) -> Iterator[Event]:
    """An .npy file holds a pickle only when its dtype has Python objects."""
    try:
        descr = _npy_descr(reader)
    except PickleError as exc:
        yield Event(label, Problem(exc.offset, f"unreadable .npy header: {exc.message}"))
        return
    if _descr_has_object(descr):
        # numpy.load reads the data with plain pickle.load: no joblib rule applies.
        yield from _pickle_events(label, reader, sniffed=False)


def _npy_descr(reader: Reader) -> object:
    reader.read(len(_NPY_MAGIC))
    major = reader.read_byte()
    reader.read_byte()
    if major not in (1, 2, 3):
        raise PickleError(len(_NPY_MAGIC), f"unsupported .npy version {major}")
    size_format = "<H" if major == 1 else "<I"
    size = struct.unpack(size_format, reader.read(struct.calcsize(size_format)))[0]
    if size > _MAX_NPY_HEADER:
        raise PickleError(reader.position, f"header of {size} bytes is too large")
    start = reader.position
    text = reader.read(size).decode("utf-8" if major == 3 else "latin-1", "replace")
    try:
        header = ast.literal_eval(text)  # literals only: the way numpy itself reads it
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as exc:
        raise PickleError(start, f"header is not a Python literal: {exc}") from exc
    if not isinstance(header, dict) or "descr" not in header:
        raise PickleError(start, "header has no 'descr'")
    return header["descr"]


def _descr_has_object(descr: object) -> bool:
    """Whether a dtype description ('<f8', or [(name, descr[, shape]), ...]) holds objects."""
    if isinstance(descr, str):
        return descr.lstrip("<>|=").startswith("O")
    if isinstance(descr, list):
        return any(
            isinstance(field, tuple) and len(field) >= 2 and _descr_has_object(field[1])
            for field in descr
        )
    # numpy would reject anything else; flag it rather than guess.
    return True


# -- zip archives --------------------------------------------------------------------------


def _zip_events(path: str, open_stream: OpenStream) -> Iterator[Event]:
    with ExitStack() as stack:
        try:
            archive = stack.enter_context(zipfile.ZipFile(_seekable(open_stream(), stack)))
        except Exception as exc:  # zipfile raises many kinds on a damaged archive
            yield Event(path, Problem(0, f"unreadable zip archive: {exc}"))
            return
        for info in archive.infolist():
            if info.is_dir() or not info.filename.lower().endswith(MEMBER_EXTENSIONS):
                continue
            label = f"{path}!{info.filename}"
            try:
                # Open once now so a member that cannot be opened is reported, not raised.
                archive.open(info).close()
            except Exception as exc:  # encrypted, unsupported compression, bad header
                yield Event(label, Problem(0, f"cannot open zip member: {exc}"))
                continue
            member = _stream_events(
                label, info.filename, lambda info=info: archive.open(info), in_archive=True
            )
            yield from _guarded(label, member)


def _seekable(stream: BinaryIO, stack: ExitStack) -> BinaryIO:
    """The stream itself if seekable, else a spooled copy: zipfile needs to seek."""
    stack.callback(stream.close)
    if is_seekable(stream):
        return stream
    # Closed by the exit stack, like the stream it copies.
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115
    stack.callback(spool.close)
    shutil.copyfileobj(stream, spool, 1024 * 1024)
    spool.seek(0)
    return spool
