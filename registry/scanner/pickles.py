"""Streaming pickle walker: reads opcodes from a byte stream and reports the globals they import.

Nothing here unpickles anything. A small symbolic stack stands in for the objects a real
unpickler would build, just enough to name what STACK_GLOBAL imports (its operands may come
from the memo) and to step over the raw array bytes joblib writes in the middle of its pickles.

Memory stays bounded whatever the file size: opcode arguments holding bytes are skipped, never
read; long strings are skipped too; containers keep at most a few hundred items; the memo and
the stack have ceilings, and crossing one is reported as an error rather than silently ignored.
"""

from __future__ import annotations

import codecs
import pickletools
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from . import numbers

CHUNK = 64 * 1024
SKIP_PIECE = 1024 * 1024
# Strings (module and class names, dict keys) longer than this are skipped, never kept.
MAX_KEPT_BYTES = 16 * 1024
# Integers wider than this (LONG4) are skipped: nothing the walker needs is that big.
MAX_INT_BYTES = 1024
# Tuples and dicts keep this many items; beyond it a tuple becomes opaque, a dict partial.
MAX_ITEMS = 256
MAX_STACK = 1_000_000
MAX_MARKS = 100_000
MAX_MEMO_ENTRIES = 10_000_000
# Rough bytes of memo values kept; past it new entries are remembered as FORGOTTEN.
MAX_MEMO_WEIGHT = 64 * 1024 * 1024

_OPCODE = {op.name: op.code.encode("latin-1")[0] for op in pickletools.opcodes}
_DTYPE_STR = re.compile(r"([biufcMmOSUV])(\d+)")
_UINT64_WRAP = 1 << 64


class PickleError(Exception):
    """The bytes stop being a readable pickle at `offset`."""

    def __init__(self, offset: int, message: str):
        super().__init__(message)
        self.offset = offset
        self.message = message


class LimitError(PickleError):
    """The pickle is too large or too deep for the walker's bounded memory."""


class FramingError(LimitError):
    """An opcode crosses the end of its FRAME (or a frame starts inside another). Readers
    disagree on such bytes: CPython's C unpickler, reading a file, can take what the frame
    says is an argument as opcodes (cpython#154848), so what it runs cannot be known."""


class Exceeded(Exception):  # a scan limit, raised through every layer
    """A scan limit (time, expanded bytes...) was crossed while reading: stop, and say which."""

    def __init__(self, limit: str, message: str):
        super().__init__(message)
        self.limit = limit
        self.message = message


# Distinct (module, name) pairs one pickle may import before the walker gives up.
MAX_DISTINCT_IMPORTS = 10_000


@dataclass(eq=False)
class Import:
    """A global the pickle imports when loaded (each distinct name once per pickle).

    `how` says how its name is known: "literal" (written in the file), "computed" (built by a
    call while loading, so unknowable without running it), "forgotten" (the memo entry holding
    it was dropped to bound memory) or "extension" (a copyreg extension code).

    `used` turns True once the pickle does anything with it that can run code before STOP:
    calls it, instantiates it, builds or fills what it made, hands it to a call or to a
    container the walker does not follow. `completed` says whether its pickle reached STOP.
    A global imported by a pickle that then fails, and never used before the failure, was
    only imported: pickle.load raises before it could run.
    """

    offset: int
    module: str
    name: str
    how: str = "literal"
    note: str = ""
    used: bool = False
    completed: bool = False


def is_seekable(stream: BinaryIO) -> bool:
    try:
        return bool(stream.seekable())
    except Exception:  # a stream that cannot say (or has no seekable()) is read, not seeked
        return False


class Reader:
    """A forward-only buffered reader over a binary stream that counts its position.

    Seekable streams are skipped over with seek; others are read and discarded in pieces.
    Any failure of the underlying stream (a corrupt compressed stream, a bad zip member)
    becomes a PickleError at the position reached.
    """

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self._buf = b""
        self._at = 0  # index of the next unread byte in _buf
        self._pos = 0  # stream position of _buf[0]
        # Seeking past the end succeeds silently; the next read then finds the end, and a
        # pickle always has at least a STOP after anything skipped, so truncation still shows.
        self._seekable = is_seekable(stream)

    @property
    def position(self) -> int:
        return self._pos + self._at

    def _raw_read(self, n: int) -> bytes:
        try:
            return self._stream.read(n)
        except (PickleError, Exceeded):
            raise
        except Exception as exc:  # whatever the stream raises means it cannot be read
            raise PickleError(self.position, f"cannot read the stream: {exc}") from exc

    def _fill(self) -> bool:
        """Load the next chunk into an exhausted buffer; False at the end of the stream."""
        self._pos += len(self._buf)
        self._buf = self._raw_read(CHUNK)
        self._at = 0
        return bool(self._buf)

    def peek(self, n: int) -> bytes:
        """Up to n bytes ahead, without consuming them (fewer at the end of the stream)."""
        while len(self._buf) - self._at < n:
            more = self._raw_read(max(CHUNK, n))
            if not more:
                break
            self._buf = self._buf[self._at :] + more
            self._pos += self._at
            self._at = 0
        return self._buf[self._at : self._at + n]

    def at_eof(self) -> bool:
        return not self.peek(1)

    def read_byte(self) -> int:
        if self._at >= len(self._buf) and not self._fill():
            raise PickleError(self.position, "unexpected end of data")
        self._at += 1
        return self._buf[self._at - 1]

    def read(self, n: int) -> bytes:
        """Exactly n bytes; callers keep n small: it is held in memory."""
        start = self.position
        data = self._buf[self._at : self._at + n]
        self._at += len(data)
        while len(data) < n:
            if not self._fill():
                raise PickleError(start, f"unexpected end of data: needed {n} bytes")
            piece = self._buf[: n - len(data)]
            self._at = len(piece)
            data += piece
        return data

    def read_some(self, n: int) -> bytes:
        """Up to n bytes, b"" at the end: what a decompressor reading through us expects."""
        if self._at >= len(self._buf) and not self._fill():
            return b""
        data = self._buf[self._at : self._at + n]
        self._at += len(data)
        return data

    def skip(self, n: int) -> None:
        """Step over n bytes without keeping them."""
        start = self.position
        in_buffer = min(n, len(self._buf) - self._at)
        self._at += in_buffer
        n -= in_buffer
        if n == 0:
            return
        self._pos, self._buf, self._at = self.position, b"", 0
        if self._seekable:
            try:
                self._stream.seek(n, 1)
            except Exceeded:
                raise
            except Exception:  # some streams claim to seek but cannot: read instead
                self._seekable = False
            else:
                self._pos += n
                return
        while n:
            piece = self._raw_read(min(n, SKIP_PIECE))
            if not piece:
                raise PickleError(start, "unexpected end of data while skipping")
            self._pos += len(piece)
            n -= len(piece)

    def readline(self) -> bytes | None:
        """The bytes up to the next newline (consumed, not returned); None if too long to keep."""
        start = self.position
        parts: list[bytes] = []
        kept = 0
        while True:
            end = self._buf.find(b"\n", self._at)
            if end >= 0:
                piece, self._at = self._buf[self._at : end], end + 1
            else:
                piece, self._at = self._buf[self._at :], len(self._buf)
            if kept <= MAX_KEPT_BYTES:
                parts.append(piece)
                kept += len(piece)
            if end >= 0:
                return b"".join(parts) if kept <= MAX_KEPT_BYTES else None
            if not self._fill():
                raise PickleError(start, "unexpected end of data: unterminated line")


class _Sym:
    """A value the walker does not model in detail, tagged with what it is."""

    __slots__ = ("what",)

    def __init__(self, what: str):
        self.what = what

    def __repr__(self) -> str:
        return f"<{self.what}>"


OPAQUE = _Sym("opaque")  # lists, sets, bytes, big numbers: never a str at load time
UNKNOWN = _Sym("unknown")  # a value only the loader knows (persistent ids, buffers)
LONG_TEXT = _Sym("long text")  # a str too long to keep
FORGOTTEN = _Sym("forgotten")  # a memo entry dropped to bound memory


@dataclass(frozen=True, eq=False)
class _Global:
    module: str
    name: str
    record: Import | None = None


@dataclass(eq=False)
class _Obj:
    """The result of calling (`how` = "call") or instantiating without __init__ ("new")."""

    how: str
    func: object
    args: object
    states: list | None = field(default_factory=list)  # None once too many BUILDs to track
    exposed: bool = False  # handed to code already: whatever reaches it later is used


@dataclass(eq=False)
class _Dict:
    items: dict = field(default_factory=dict)
    partial: bool = False
    exposed: bool = False  # handed to code already: whatever reaches it later is used

    def set(self, key: object, value: object) -> bool:
        """Keep the item; False if it was dropped (the dict is then partial)."""
        try:
            if key in self.items or len(self.items) < MAX_ITEMS:
                self.items[key] = value
                return True
        except TypeError:  # an unhashable key the walker models (none today): drop it
            pass
        self.partial = True
        return False


def _tuple(items: list) -> object:
    return tuple(items) if len(items) <= MAX_ITEMS else OPAQUE


def _weight(value: object) -> int:
    """Approximate bytes a memo entry keeps alive."""
    if isinstance(value, str):
        return 50 + len(value)
    if isinstance(value, tuple):
        return 40 + 8 * len(value)
    if isinstance(value, _Dict):
        return 100 + 100 * len(value.items)
    return 0 if isinstance(value, _Sym) else 100


class _Memo:
    """A pickle's memo. Sequential keys (the usual case) live in a list, others in a dict."""

    def __init__(self, touch=None) -> None:
        self._seq: list = []
        self._sparse: dict[int, object] = {}
        self._weight = 0
        self._touch = touch

    def __len__(self) -> int:
        return len(self._seq) + len(self._sparse)

    def get(self, key: int, offset: int) -> object:
        if 0 <= key < len(self._seq):
            return self._seq[key]
        if key in self._sparse:
            return self._sparse[key]
        raise PickleError(offset, f"memo key {key} is not defined")

    def put(self, key: int, value: object, offset: int) -> None:
        if key < 0:
            raise PickleError(offset, "negative memo key")
        weight = _weight(value)
        if self._weight + weight > MAX_MEMO_WEIGHT:
            if self._touch is not None:
                self._touch(value)
            value = FORGOTTEN
        else:
            self._weight += weight
        if key < len(self._seq):
            self._seq[key] = value
        elif key == len(self._seq):
            self._seq.append(value)
            while len(self._seq) in self._sparse:
                self._seq.append(self._sparse.pop(len(self._seq)))
        else:
            self._sparse[key] = value
        if len(self._seq) + len(self._sparse) > MAX_MEMO_ENTRIES:
            raise LimitError(offset, f"more than {MAX_MEMO_ENTRIES} memo entries")


def _is_global(value: object, module: str | tuple[str, ...], name: str) -> bool:
    modules = (module,) if isinstance(module, str) else module
    return isinstance(value, _Global) and value.module in modules and value.name == name


# sklearn <= 0.22 vendored joblib as sklearn.externals.joblib.
_JOBLIB_MODULES = tuple(
    f"{package}.{module}"
    for package in ("joblib", "sklearn.externals.joblib")
    for module in ("numpy_pickle", "numpy_pickle_compat")
)


def _is_joblib_class(value: object, name: str) -> bool:
    return _is_global(value, _JOBLIB_MODULES, name)


_STOP = object()


class _Machine:
    """Walks one pickle, from its first opcode to its STOP, yielding the globals it imports.

    `joblib` turns on joblib's reading rule (array bytes follow a NumpyArrayWrapper's BUILD);
    `data_at` is then where the first such array's bytes begin.
    """

    def __init__(self, reader: Reader, *, joblib: bool, table: dict | None = None):
        self.reader = reader
        self.joblib = joblib
        self.stack: list = []
        self.metastack: list[list] = []
        self.memo = _Memo(self._touch)
        self.buried = 0  # items in the stacks under the MARKs
        self.frame_end = 0
        self.opcodes = 0
        self.data_at: int | None = None
        # (module, name, how) -> Import: one record per distinct global, shared with nested
        # pickles (joblib object arrays) that belong to the same load.
        self.table: dict[tuple[str, str, str], Import] = {} if table is None else table

    @property
    def imported(self) -> int:
        return len(self.table)

    def run(self) -> Iterator[Import]:
        reader = self.reader
        while True:
            offset = reader.position
            code = reader.read_byte()
            handler = _DISPATCH[code]
            if handler is None:
                raise PickleError(offset, f"invalid opcode {code:#04x}")
            self.opcodes += 1
            frame_end = self.frame_end
            found = handler(self, offset)
            # Checked before a returned iterator runs: joblib's array bytes follow a frame.
            if offset < frame_end < reader.position:
                raise FramingError(offset, "an opcode crosses the end of its pickle frame")
            if found is None:
                pass
            elif found is _STOP:
                return
            elif isinstance(found, Import):
                yield found
            else:
                yield from found
            if len(self.stack) + self.buried > MAX_STACK:
                raise LimitError(offset, f"more than {MAX_STACK} items on the stack")

    def _record(self, offset: int, module: str, name: str, how: str = "literal") -> Import | None:
        """The Import for this global: a new one (returned, to be yielded), or None if this
        pickle already imported it (the existing record is then in `self.last`)."""
        key = (module, name, how)
        known = self.table.get(key)
        if known is not None:
            self.last = known
            return None
        if len(self.table) >= MAX_DISTINCT_IMPORTS:
            raise LimitError(offset, f"more than {MAX_DISTINCT_IMPORTS} distinct globals")
        found = Import(offset, module, name, how)
        if how != "literal":
            found.used = True  # nothing to follow: count it whatever happens next
        self.table[key] = self.last = found
        return found

    def _touch(self, value: object) -> None:
        """Mark every global reachable from `value` as used: it is being called, built,
        handed to a call, or put where the walker stops following it."""
        pending = [value]
        seen = 0
        while pending:
            item = pending.pop()
            seen += 1
            if seen > 100_000:  # a structure too big to follow: count everything
                for record in self.table.values():
                    record.used = True
                return
            if isinstance(item, _Global):
                if item.record is not None:
                    item.record.used = True
            elif isinstance(item, tuple):
                pending.extend(item)
            elif isinstance(item, _Dict):
                if item.exposed:
                    continue
                item.exposed = True
                pending.extend(item.items.keys())
                pending.extend(item.items.values())
            elif isinstance(item, _Obj):
                if item.exposed:
                    continue
                item.exposed = True
                pending.append(item.func)
                pending.append(item.args)
                if item.states:
                    pending.extend(item.states)

    # -- stack helpers -------------------------------------------------------------------

    def _pop(self, offset: int) -> object:
        if not self.stack:
            raise PickleError(offset, "stack underflow")
        return self.stack.pop()

    def _top(self, offset: int) -> object:
        if not self.stack:
            raise PickleError(offset, "stack underflow")
        return self.stack[-1]

    def _pop_mark(self, offset: int) -> list:
        if not self.metastack:
            raise PickleError(offset, "no MARK on the stack")
        items = self.stack
        self.stack = self.metastack.pop()
        self.buried -= len(self.stack)
        return items

    def _pairs(self, items: list, offset: int) -> Iterator[tuple[object, object]]:
        if len(items) % 2:
            raise PickleError(offset, "odd number of items for a dict")
        return zip(items[::2], items[1::2], strict=True)

    # -- argument readers ----------------------------------------------------------------

    def _unpack(self, fmt: str) -> int | float:
        return struct.unpack(fmt, self.reader.read(struct.calcsize(fmt)))[0]

    def _line(self, offset: int) -> str | None:
        line = self.reader.readline()
        if line is None:
            return None
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PickleError(offset, f"argument is not UTF-8: {exc}") from exc

    def _text(self, n: int, encoding: str, offset: int) -> object:
        if n < 0:
            raise PickleError(offset, "negative length")
        if n > MAX_KEPT_BYTES:
            self.reader.skip(n)
            return LONG_TEXT
        try:
            return self.reader.read(n).decode(encoding, "surrogatepass")
        except UnicodeDecodeError as exc:
            raise PickleError(offset, f"string is not {encoding}: {exc}") from exc

    def _skip_bytes(self, n: int, offset: int) -> object:
        if n < 0:
            raise PickleError(offset, "negative length")
        self.reader.skip(n)
        return OPAQUE

    def _global_names(self, offset: int) -> tuple[str, str]:
        # The unpicklers take any UTF-8 (INST: ASCII) text here and ask find_class for it;
        # names that are not identifiers are recorded (never allow-listed), not rejected.
        module, name = self._line(offset), self._line(offset)
        if module is None or name is None:
            raise LimitError(offset, "GLOBAL/INST name too long to follow")
        if not module or not name:
            raise PickleError(offset, "empty GLOBAL/INST name")  # both unpicklers fail here
        return module, name

    # -- opcodes: control ----------------------------------------------------------------

    def _op_PROTO(self, offset: int) -> None:
        version = self.reader.read_byte()
        if version > 5:
            raise PickleError(offset, f"unsupported pickle protocol {version}")

    def _op_FRAME(self, offset: int) -> None:
        if offset < self.frame_end:
            raise FramingError(offset, "a pickle frame starts before the previous one ends")
        length = self._unpack("<Q")
        self.frame_end = self.reader.position + length

    def _op_STOP(self, offset: int) -> object:
        self._pop(offset)
        return _STOP

    def _op_MARK(self, offset: int) -> None:
        if len(self.metastack) >= MAX_MARKS:
            raise LimitError(offset, f"more than {MAX_MARKS} nested MARKs")
        self.metastack.append(self.stack)
        self.buried += len(self.stack)
        self.stack = []

    def _op_POP(self, offset: int) -> None:
        if self.stack:
            self.stack.pop()
        else:
            self._pop_mark(offset)

    def _op_POP_MARK(self, offset: int) -> None:
        self._pop_mark(offset)

    def _op_DUP(self, offset: int) -> None:
        self.stack.append(self._top(offset))

    # -- opcodes: scalars ----------------------------------------------------------------

    def _op_NONE(self, offset: int) -> None:
        self.stack.append(None)

    def _op_NEWTRUE(self, offset: int) -> None:
        self.stack.append(True)

    def _op_NEWFALSE(self, offset: int) -> None:
        self.stack.append(False)

    # Text numbers are parsed as leniently as the most lenient unpickler: C's (_pickle.c:
    # strtol base 0, PyLong_FromString and PyOS_string_to_double on a NUL-terminated line)
    # or Python's (pickle.py, which joblib uses: int(line, 0), float(line)). Failing where a
    # real load goes on would hide what comes next. Too long to keep: an opaque number.

    def _op_INT(self, offset: int) -> None:
        line = self.reader.readline()
        value = OPAQUE if line is None else numbers.parse_int(line)
        if value is None:
            raise PickleError(offset, "bad INT argument")
        self.stack.append(value)

    def _op_LONG(self, offset: int) -> None:
        line = self.reader.readline()
        value = OPAQUE if line is None else numbers.parse_long(line)
        if value is None:
            raise PickleError(offset, "bad LONG argument")
        self.stack.append(value)

    def _op_FLOAT(self, offset: int) -> None:
        line = self.reader.readline()
        value = OPAQUE if line is None else numbers.parse_float(line)
        if value is None:
            raise PickleError(offset, "bad FLOAT argument")
        self.stack.append(value)

    def _op_BININT(self, offset: int) -> None:
        self.stack.append(self._unpack("<i"))

    def _op_BININT1(self, offset: int) -> None:
        self.stack.append(self.reader.read_byte())

    def _op_BININT2(self, offset: int) -> None:
        self.stack.append(self._unpack("<H"))

    def _long(self, n: int, offset: int) -> None:
        if n < 0:
            raise PickleError(offset, "negative length")
        if n > MAX_INT_BYTES:
            self.stack.append(self._skip_bytes(n, offset))
        else:
            self.stack.append(int.from_bytes(self.reader.read(n), "little", signed=True))

    def _op_LONG1(self, offset: int) -> None:
        self._long(self.reader.read_byte(), offset)

    def _op_LONG4(self, offset: int) -> None:
        self._long(self._unpack("<i"), offset)

    def _op_BINFLOAT(self, offset: int) -> None:
        self.stack.append(self._unpack(">d"))

    # -- opcodes: strings and bytes ------------------------------------------------------
    # Python 3 loads protocol 0-2 byte strings (STRING, BINSTRING) as str by default, and a
    # str can name what STACK_GLOBAL imports, so they are kept as str like unicode strings.

    def _op_STRING(self, offset: int) -> None:
        line = self.reader.readline()
        if line is None:
            self.stack.append(LONG_TEXT)
            return
        if len(line) < 2 or line[0] != line[-1] or line[:1] not in (b"'", b'"'):
            raise PickleError(offset, "STRING argument must be quoted")
        try:
            self.stack.append(codecs.escape_decode(line[1:-1])[0].decode("latin-1"))
        except ValueError as exc:
            raise PickleError(offset, f"bad STRING argument: {exc}") from exc

    def _op_BINSTRING(self, offset: int) -> None:
        # C reads the length unsigned (pickle.py rejects a negative one): unsigned is lenient.
        self.stack.append(self._text(self._unpack("<I"), "latin-1", offset))

    def _op_SHORT_BINSTRING(self, offset: int) -> None:
        self.stack.append(self._text(self.reader.read_byte(), "latin-1", offset))

    def _op_UNICODE(self, offset: int) -> None:
        line = self.reader.readline()
        if line is None:
            self.stack.append(LONG_TEXT)
            return
        try:
            self.stack.append(line.decode("raw-unicode-escape"))
        except UnicodeDecodeError as exc:
            raise PickleError(offset, f"bad UNICODE argument: {exc}") from exc

    def _op_SHORT_BINUNICODE(self, offset: int) -> None:
        self.stack.append(self._text(self.reader.read_byte(), "utf-8", offset))

    def _op_BINUNICODE(self, offset: int) -> None:
        self.stack.append(self._text(self._unpack("<I"), "utf-8", offset))

    def _op_BINUNICODE8(self, offset: int) -> None:
        self.stack.append(self._text(self._unpack("<Q"), "utf-8", offset))

    def _op_SHORT_BINBYTES(self, offset: int) -> None:
        self.stack.append(self._skip_bytes(self.reader.read_byte(), offset))

    def _op_BINBYTES(self, offset: int) -> None:
        self.stack.append(self._skip_bytes(self._unpack("<I"), offset))

    def _op_BINBYTES8(self, offset: int) -> None:
        self.stack.append(self._skip_bytes(self._unpack("<Q"), offset))

    def _op_BYTEARRAY8(self, offset: int) -> None:
        self.stack.append(self._skip_bytes(self._unpack("<Q"), offset))

    def _op_NEXT_BUFFER(self, offset: int) -> None:
        self.stack.append(UNKNOWN)

    def _op_READONLY_BUFFER(self, offset: int) -> None:
        self._top(offset)

    # -- opcodes: containers -------------------------------------------------------------
    # Lists and sets are never needed to name an import or size an array: they stay opaque.

    def _op_EMPTY_TUPLE(self, offset: int) -> None:
        self.stack.append(())

    def _op_TUPLE(self, offset: int) -> None:
        items = self._pop_mark(offset)  # replaces self.stack: pop before appending
        self.stack.append(self._kept_tuple(items))

    def _kept_tuple(self, items: list) -> object:
        result = _tuple(items)
        if result is OPAQUE:
            self._touch(tuple(items))
        return result

    def _tuple_n(self, n: int, offset: int) -> None:
        if len(self.stack) < n:
            raise PickleError(offset, "stack underflow")
        items = self.stack[-n:]
        del self.stack[-n:]
        self.stack.append(tuple(items))

    def _op_TUPLE1(self, offset: int) -> None:
        self._tuple_n(1, offset)

    def _op_TUPLE2(self, offset: int) -> None:
        self._tuple_n(2, offset)

    def _op_TUPLE3(self, offset: int) -> None:
        self._tuple_n(3, offset)

    def _op_EMPTY_LIST(self, offset: int) -> None:
        self.stack.append(OPAQUE)

    def _op_LIST(self, offset: int) -> None:
        self._touch(tuple(self._pop_mark(offset)))
        self.stack.append(OPAQUE)

    def _op_APPEND(self, offset: int) -> None:
        value = self._pop(offset)
        self._touch((self._top(offset), value))

    def _op_APPENDS(self, offset: int) -> None:
        items = self._pop_mark(offset)
        self._touch((self._top(offset), *items))

    def _op_EMPTY_DICT(self, offset: int) -> None:
        self.stack.append(_Dict())

    def _op_DICT(self, offset: int) -> None:
        result = _Dict()
        for key, value in self._pairs(self._pop_mark(offset), offset):
            if not result.set(key, value):
                self._touch((key, value))
        self.stack.append(result)

    def _set_items(self, target: object, pairs: Iterator[tuple[object, object]]) -> None:
        if isinstance(target, _Dict):
            for key, value in pairs:
                if not target.set(key, value) or target.exposed:
                    self._touch((key, value))
        else:  # __setitem__ of something the walker does not model
            self._touch((target, *(item for pair in pairs for item in pair)))

    def _op_SETITEM(self, offset: int) -> None:
        value, key = self._pop(offset), self._pop(offset)
        self._set_items(self._top(offset), iter([(key, value)]))

    def _op_SETITEMS(self, offset: int) -> None:
        pairs = self._pairs(self._pop_mark(offset), offset)
        self._set_items(self._top(offset), pairs)

    def _op_EMPTY_SET(self, offset: int) -> None:
        self.stack.append(OPAQUE)

    def _op_ADDITEMS(self, offset: int) -> None:
        items = self._pop_mark(offset)
        self._touch((self._top(offset), *items))

    def _op_FROZENSET(self, offset: int) -> None:
        self._touch(tuple(self._pop_mark(offset)))
        self.stack.append(OPAQUE)

    # -- opcodes: memo -------------------------------------------------------------------

    def _get(self, key: int, offset: int) -> None:
        self.stack.append(self.memo.get(key, offset))

    def _put(self, key: int, offset: int) -> None:
        self.memo.put(key, self._top(offset), offset)

    def _memo_key_line(self, offset: int) -> int:
        line = self.reader.readline()
        if line is None:
            raise LimitError(offset, "memo key too long to follow")
        key = numbers.parse_memo_key(line)
        if key is None:
            raise PickleError(offset, "bad memo key")
        return key

    def _op_GET(self, offset: int) -> None:
        self._get(self._memo_key_line(offset), offset)

    def _op_BINGET(self, offset: int) -> None:
        self._get(self.reader.read_byte(), offset)

    def _op_LONG_BINGET(self, offset: int) -> None:
        self._get(self._unpack("<I"), offset)

    def _op_PUT(self, offset: int) -> None:
        self._put(self._memo_key_line(offset), offset)

    def _op_BINPUT(self, offset: int) -> None:
        self._put(self.reader.read_byte(), offset)

    def _op_LONG_BINPUT(self, offset: int) -> None:
        self._put(self._unpack("<I"), offset)

    def _op_MEMOIZE(self, offset: int) -> None:
        self._put(len(self.memo), offset)

    # -- opcodes: imports and calls ------------------------------------------------------

    def _global(self, offset: int, module: str, name: str) -> tuple[_Global, Import | None]:
        found = self._record(offset, module, name)
        return _Global(module, name, self.last), found

    def _op_GLOBAL(self, offset: int) -> Import | None:
        module, name = self._global_names(offset)
        value, found = self._global(offset, module, name)
        self.stack.append(value)
        return found

    def _op_STACK_GLOBAL(self, offset: int) -> Import | None:
        name, module = self._pop(offset), self._pop(offset)
        if isinstance(module, str) and isinstance(name, str):
            value, found = self._global(offset, module, name)
            self.stack.append(value)
            return found
        for value in (module, name):
            # The loader insists on two exact str: anything certainly not one fails there.
            if not isinstance(value, str | _Obj) and value not in (UNKNOWN, LONG_TEXT, FORGOTTEN):
                raise PickleError(offset, "STACK_GLOBAL operands are not strings")
        self._touch((module, name))
        how = "forgotten" if FORGOTTEN in (module, name) else "computed"
        self.stack.append(UNKNOWN)
        return self._record(offset, _shown(module), _shown(name), how)

    def _op_INST(self, offset: int) -> Import | None:
        module, name = self._global_names(offset)
        args = self._pop_mark(offset)
        value, found = self._global(offset, module, name)
        self._touch((value, *args))  # INST calls the class at once
        self.stack.append(_Obj("call" if args else "new", value, _tuple(args)))
        return found

    def _op_OBJ(self, offset: int) -> None:
        items = self._pop_mark(offset)
        if not items:
            raise PickleError(offset, "OBJ without a class")
        self._touch(tuple(items))
        self.stack.append(_Obj("call" if len(items) > 1 else "new", items[0], _tuple(items[1:])))

    def _op_REDUCE(self, offset: int) -> None:
        args, func = self._pop(offset), self._pop(offset)
        self._touch((func, args))
        self.stack.append(_Obj("call", func, args))

    def _op_NEWOBJ(self, offset: int) -> None:
        args, cls = self._pop(offset), self._pop(offset)
        self._touch((cls, args))
        self.stack.append(_Obj("new", cls, args))

    def _op_NEWOBJ_EX(self, offset: int) -> None:
        kwargs = self._pop(offset)
        args, cls = self._pop(offset), self._pop(offset)
        self._touch((cls, args, kwargs))
        self.stack.append(_Obj("new", cls, args))

    def _extension(self, code: int, offset: int) -> Import | None:
        self.stack.append(UNKNOWN)
        return self._record(offset, "copyreg", f"extension code {code}", "extension")

    def _op_EXT1(self, offset: int) -> Import:
        return self._extension(self.reader.read_byte(), offset)

    def _op_EXT2(self, offset: int) -> Import:
        return self._extension(self._unpack("<H"), offset)

    def _op_EXT4(self, offset: int) -> Import:
        return self._extension(self._unpack("<i"), offset)

    def _op_PERSID(self, offset: int) -> None:
        self.reader.readline()
        self.stack.append(UNKNOWN)

    def _op_BINPERSID(self, offset: int) -> None:
        self._touch(self._pop(offset))  # handed to the loader's persistent_load
        self.stack.append(UNKNOWN)

    def _op_BUILD(self, offset: int) -> Iterator[Import] | None:
        state = self._pop(offset)
        target = self._top(offset)
        self._touch((target, state))
        if isinstance(target, _Obj) and target.states is not None:
            target.states.append(state)
            if len(target.states) > 8:
                target.states = None
        if not self.joblib:
            return None
        cls, _ = _class_of(target)
        if _is_joblib_class(cls, "NumpyArrayWrapper"):
            return self._joblib_array(target, offset)
        if _is_joblib_class(cls, "NDArrayWrapper") or _is_joblib_class(cls, "ZNDArrayWrapper"):
            # joblib < 0.10 kept arrays in separate files: nothing inline to step over.
            self.stack[-1] = OPAQUE
        return None

    # -- joblib arrays -------------------------------------------------------------------

    def _joblib_array(self, wrapper: _Obj, offset: int) -> Iterator[Import]:
        """Step over the array joblib wrote right after this wrapper, as joblib.load reads it."""
        if self.data_at is None:
            self.data_at = self.reader.position
        if self.reader.position < self.frame_end:
            # joblib ends the frame before writing array bytes; data inside a frame would be
            # read as opcodes by the unpickler but as array bytes by joblib.
            raise PickleError(offset, "joblib array data inside a pickle frame")
        try:
            nbytes, has_object, padded = _array_layout(wrapper)
        except _Unmodelled as exc:
            raise PickleError(offset, f"cannot size the joblib array: {exc}") from exc
        self.stack[-1] = OPAQUE
        if has_object:
            # joblib pickles object arrays as a nested pickle read by a fresh unpickler.
            nested = _Machine(self.reader, joblib=False, table=self.table)
            yield from nested.run()
            for record in self.table.values():
                record.used = True  # numpy rebuilds the array from it: a call
        elif padded:
            pad = self.reader.read_byte()
            self.reader.skip(pad + nbytes)
        else:
            self.reader.skip(nbytes)


def _shown(value: object) -> str:
    return value if isinstance(value, str) else "?"


_DISPATCH: list = [None] * 256
for _name, _code in _OPCODE.items():
    _DISPATCH[_code] = getattr(_Machine, f"_op_{_name}", None)


class _Unmodelled(Exception):
    """The walker cannot tell what joblib would read here."""


_RECONSTRUCTORS = (("copyreg", "copy_reg"), "_reconstructor")
_NEWOBJS = ("__newobj__", "__newobj_ex__")


def _class_of(obj: object) -> tuple[object, bool]:
    """The class an object was made from, and whether its __init__ ran."""
    if not isinstance(obj, _Obj):
        return None, False
    if obj.how == "new":
        return obj.func, False
    args = obj.args if isinstance(obj.args, tuple) else ()
    if _is_global(obj.func, *_RECONSTRUCTORS) and args:
        return args[0], False
    if any(_is_global(obj.func, ("copyreg", "copy_reg"), name) for name in _NEWOBJS) and args:
        return args[0], False
    return obj.func, True


# NumpyArrayWrapper.__init__ parameters, in order.
_WRAPPER_FIELDS = (
    "subclass",
    "shape",
    "order",
    "dtype",
    "allow_mmap",
    "numpy_array_alignment_bytes",
)


def _wrapper_attributes(wrapper: _Obj) -> dict:
    """The attributes NumpyArrayWrapper.read would see, from its constructor and BUILDs."""
    attributes: dict = {}
    _, initialised = _class_of(wrapper)
    if initialised:
        args = wrapper.args
        if not isinstance(args, tuple) or not 4 <= len(args) <= 6:
            raise _Unmodelled("unexpected constructor arguments")
        attributes = {"numpy_array_alignment_bytes": 16}
        attributes.update(zip(_WRAPPER_FIELDS, args, strict=False))
    elif _is_global(wrapper.func, *_RECONSTRUCTORS) and not (
        len(wrapper.args) == 3
        and _is_global(wrapper.args[1], ("builtins", "__builtin__"), "object")
        and wrapper.args[2] is None
    ):
        raise _Unmodelled("rebuilt from an unusual base class")
    if wrapper.states is None:
        raise _Unmodelled("too many BUILDs")
    for state in wrapper.states:
        parts = state if isinstance(state, tuple) and len(state) == 2 else (state,)
        for part in parts:
            if part is None:
                continue
            if not isinstance(part, _Dict) or part.partial:
                raise _Unmodelled("state is not a plain dict")
            attributes.update(part.items)
    return attributes


def _array_layout(wrapper: _Obj) -> tuple[int, bool, bool]:
    """(bytes of array data, whether it is a nested pickle instead, whether padding precedes)."""
    attributes = _wrapper_attributes(wrapper)
    shape = attributes.get("shape")
    if not isinstance(shape, tuple) or not all(isinstance(n, int) for n in shape):
        raise _Unmodelled("shape is not a tuple of integers")
    count = 1
    for n in shape:
        count *= n
    # joblib multiplies the dimensions as numpy int64, which wraps around.
    count %= _UINT64_WRAP
    if count >= _UINT64_WRAP // 2:
        raise _Unmodelled("negative element count")
    itemsize, has_object = _dtype_layout(attributes.get("dtype"))
    padded = attributes.get("numpy_array_alignment_bytes") is not None
    return count * itemsize, has_object, padded


def _dtype_layout(dtype: object, depth: int = 0) -> tuple[int, bool]:
    """(itemsize, has objects) of a numpy.dtype rebuilt the way numpy pickles dtypes."""
    if depth > 32:  # the memo can make a dtype contain itself
        raise _Unmodelled("dtype nested too deeply")
    if not (
        isinstance(dtype, _Obj)
        and dtype.how == "call"
        and isinstance(dtype.func, _Global)
        and dtype.func.module.split(".")[0] == "numpy"
        and dtype.func.name == "dtype"
        and isinstance(dtype.args, tuple)
        and dtype.args
        and isinstance(dtype.args[0], str)
    ):
        raise _Unmodelled("dtype is not a numpy.dtype")
    match = _DTYPE_STR.fullmatch(dtype.args[0])
    if match is None:
        raise _Unmodelled(f"unsupported dtype {dtype.args[0]!r}")
    kind, size = match.group(1), int(match.group(2))
    itemsize = size * 4 if kind == "U" else size
    has_object = kind == "O"
    if dtype.states is None:
        raise _Unmodelled("too many dtype BUILDs")
    for state in dtype.states:
        if not isinstance(state, tuple) or len(state) < 8:
            raise _Unmodelled("unexpected dtype state")
        subarray, fields, elsize, flags = state[2], state[4], state[5], state[7]
        # numpy takes the item size from the state only for flexible types.
        if kind in "SUV" and isinstance(elsize, int) and elsize >= 0:
            itemsize = elsize
        # Any hint of Python objects counts: wrongly skipping a nested pickle would hide it.
        has_object |= isinstance(flags, int) and bool(flags & 1)
        has_object |= _fields_have_object(subarray, fields, depth)
    return itemsize, has_object


def _fields_have_object(subarray: object, fields: object, depth: int) -> bool:
    dtypes = []
    if isinstance(subarray, tuple) and subarray:
        dtypes.append(subarray[0])
    if isinstance(fields, _Dict):
        if fields.partial:
            raise _Unmodelled("too many dtype fields")
        for entry in fields.items.values():
            if not isinstance(entry, tuple) or not entry:
                raise _Unmodelled("unexpected dtype field")
            dtypes.append(entry[0])
    elif fields is not None:
        raise _Unmodelled("unexpected dtype fields")
    return any(_dtype_layout(inner, depth + 1)[1] for inner in dtypes)


@dataclass
class Walk:
    """What walking a stream as pickles found.

    `imports`: every distinct global of every pickle walked, in order, each knowing whether
    its pickle completed and whether it was used. `pickles`: how many reached STOP. `error`:
    where the walk stopped reading pickles, if it was not a clean end of stream (the first
    pickle failing, or bytes after a complete pickle); `error_opcodes`: the opcodes the
    failing pickle got through. `limit`: the walker's own memory bounds were crossed (the
    walk cannot be judged). `joblib_data_at`: where the first joblib array's bytes begin.
    """

    imports: list[Import] = field(default_factory=list)
    pickles: int = 0
    error: PickleError | None = None
    error_opcodes: int = 0
    limit: LimitError | None = None
    joblib_data_at: int | None = None

    @property
    def failed_imports(self) -> bool:
        return any(not found.completed for found in self.imports)


def walk(reader: Reader, *, joblib: bool, start: int = 0) -> Walk:
    """Walk the pickles in `reader` back to back (joblib and legacy torch write several),
    as joblib.load (`joblib`) or pickle.load reads them. Walking stops at the end of the
    stream or at the first pickle that fails; imports at offsets before `start` are left
    out (used to see only what pickle.load reads past joblib's first array)."""
    result = Walk()
    while True:
        machine = _Machine(reader, joblib=joblib)
        try:
            for _ in machine.run():
                pass
        except LimitError as exc:
            result.limit = exc
            _keep(result, machine, completed=False, start=start)
            return result
        except PickleError as exc:
            result.error, result.error_opcodes = exc, machine.opcodes
            _keep(result, machine, completed=False, start=start)
            return result
        finally:
            if result.joblib_data_at is None:
                result.joblib_data_at = machine.data_at
        result.pickles += 1
        _keep(result, machine, completed=True, start=start)
        if len(result.imports) > MAX_DISTINCT_IMPORTS:
            result.limit = LimitError(reader.position, "too many globals to follow")
            return result
        if reader.at_eof():
            return result


def _keep(result: Walk, machine: _Machine, *, completed: bool, start: int) -> None:
    for found in machine.table.values():
        found.completed = completed
        if found.offset >= start:
            result.imports.append(found)
