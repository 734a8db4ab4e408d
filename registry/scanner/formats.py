"""Classifying a file, and every member and stream inside it, by its bytes.

Each file is a tree of nodes: the file itself, the members of its archives (zip, tar) and
the streams its compressed parts decompress to, to `max_depth` levels. Every node is:

1. walked as pickles from its first byte, whatever its name and first opcode
   (`judge_walk`: what it imports is judged by the allow-list);
2. recognised by its content: compressed stream, zip (by a local header at byte 0 or by
   its central directory at the end), tar (a valid header block), .npy, safetensors,
   GGUF, ONNX, Keras, HDF5, TensorFlow graphs; each recognised format is validated;
3. checked against what it claims, by magic bytes or by name: a claim that its bytes
   do not bear out is `unverified`, with the reason.

Bytes that are none of these are data, and data is clean.
"""

from __future__ import annotations

import ast
import json
import os
import posixpath
import re
import struct
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import BinaryIO

from ..packaging import onnx_io
from . import policy
from .pickles import Exceeded, Import, PickleError, Reader, Walk, walk
from .streams import Budget, DecompressError, Metered, Window, decompress_to, new_spool, size_of

UNSAFE, UNVERIFIED = "unsafe", "unverified"
_HEAD = 4096
_TAIL = 65536 + 22
# A pickle header (PROTO 2..5) followed by a walk failing within this many opcodes is raw
# data whose first bytes happen to be 0x80 0x02..0x05 (a float32 tensor can start so),
# unless the name claims a pickle.
PROTO_GRACE_OPCODES = 8
_MAX_JSON = 64 * 2**20  # Keras config.json, safetensors header: bigger is not inspected
_HDF5_SEARCH = 64 * 2**20
_MAX_NPY_HEADER = 1024 * 1024

_NAME_CLAIMS = {
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".joblib": "pickle",
    ".dill": "pickle",
    ".pt": "torch",
    ".pth": "torch",
    ".ckpt": "torch",
    ".safetensors": "safetensors",
    ".gguf": "gguf",
    ".onnx": "onnx",
    ".keras": "keras",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".npy": "npy",
    ".npz": "zip",
    ".zip": "zip",
    ".tar": "tar",
    ".gz": "gzip",
    ".tgz": "gzip",
    ".bz2": "bz2",
    ".xz": "xz",
    ".lzma": "lzma",
    ".zst": "zstd",
}
_COMPRESSIONS = ("gzip", "bz2", "xz", "lzma", "zstd", "zlib")
# What satisfies a claim: a .pt may be a zip, a legacy tar or a bare pickle sequence.
_SATISFIES = {
    "torch": {"zip", "tar", "pickle"},
    "pickle": {"pickle"},
}


@dataclass(frozen=True)
class Problem:
    offset: int
    severity: str
    detail: str
    module: str = ""
    name: str = ""


@dataclass
class Node:
    path: tuple[str, ...]  # members and streams inside the version file, outermost first
    name: str  # the name that may claim a format (member name, or the file path)
    open: Callable[[], BinaryIO]  # a new seekable stream of the node's bytes
    size: int
    depth: int
    keras_weights: bool = False  # an HDF5 member of a Keras archive whose config was judged


@dataclass
class FileScan:
    """One file's scan: everything found, by node."""

    file: str
    budget: Budget
    unsafe_globals: frozenset[str]
    version_paths: frozenset[str] | None
    problems: list[tuple[str, Problem]] = field(default_factory=list)
    formats: set[str] = field(default_factory=set)

    def report(self, node: Node, problem: Problem) -> None:
        self.problems.append(("!".join(node.path), problem))

    def unverified(self, node: Node, detail: str, offset: int = 0) -> None:
        self.report(node, Problem(offset, UNVERIFIED, detail))


# -- the tree ------------------------------------------------------------------------------


def scan_tree(scan: FileScan, root: Node) -> None:
    """Scan `root` and everything inside it; limits that end the whole file's scan
    propagate as Exceeded."""
    scan_node(scan, root)


def scan_node(scan: FileScan, node: Node) -> set[str]:
    """Scan one node; returns the formats recognised in it (and under it)."""
    found: set[str] = set()
    with ExitStack() as stack:
        stream = stack.enter_context(node.open())
        reader = Reader(stream)
        head = reader.peek(_HEAD)
        tail = _tail(node)
        claims = _claims(node.name, head)

        result = walk(reader, joblib=True)
        reasons: dict[str, str] = {}
        if judge_walk(scan, node, result, head, claimed=bool(claims & {"pickle", "torch"}),
                      reasons=reasons):  # fmt: skip
            found.add("pickle")
            if result.joblib_data_at is not None or _is_joblib(result):
                found.add("joblib")
        if result.joblib_data_at is not None:
            with node.open() as again:
                view = walk(Reader(again), joblib=False, start=result.joblib_data_at)
            _judge_imports(scan, node, view, note=_LOAD_VIEW_NOTE)

        found |= _recognise(scan, node, head, tail, claims, stack)
    for claim in claims:
        if not (_SATISFIES.get(claim, {claim}) & found):
            scan.unverified(node, reasons.get(claim) or _claim_failure(claim, node))
    scan.formats |= found
    return found


def _claim_failure(claim: str, node: Node) -> str:
    article = "an" if claim[0] in "aeiou" else "a"
    return f"named or marked as {article} {claim} file, but its bytes are not valid {claim}"


def _tail(node: Node) -> bytes:
    with node.open() as stream:
        start = max(0, node.size - _TAIL)
        stream.seek(start)
        return stream.read(node.size - start)


def _extension(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def _claims(name: str, head: bytes) -> set[str]:
    claims = set()
    claim = _NAME_CLAIMS.get(_extension(name))
    if claim is not None:
        claims.add(claim)
    if os.path.basename(name) == "saved_model.pb":
        claims.add("savedmodel")
    # Strong magic bytes claim their format too.
    if head.startswith(b"PK\x03\x04"):
        claims.add("zip")
    if head.startswith(b"GGUF"):
        claims.add("gguf")
    if head.startswith(b"\x93NUMPY"):
        claims.add("npy")
    if _hdf5_offset(head) is not None:
        claims.add("hdf5")
    if _safetensors_like(head):
        claims.add("safetensors")
    for kind in ("gzip", "bz2", "xz", "zstd"):
        if _compression(head) == kind:
            claims.add(kind)
    return claims


# -- pickles -------------------------------------------------------------------------------

_LOAD_VIEW_NOTE = "met only by pickle.load, which reads joblib's array bytes as opcodes"


def _is_joblib(result: Walk) -> bool:
    return any(found.name == "NumpyArrayWrapper" for found in result.imports)


def judge_walk(scan: FileScan, node: Node, result: Walk, head: bytes, *, claimed: bool,
               reasons: dict[str, str] | None = None) -> bool:  # fmt: skip
    """Report what a walk of `node` found; True if the node holds pickle content.

    A walk that fails before importing anything it must answer for is not a pickle: data.
    In a walk that fails before STOP, a global that was only imported, never used, is
    ignored (pickle.load raises before it could run): this keeps text files whose lines
    start with "c" clean. Unsafe names always count."""
    counted = _judge_imports(scan, node, result)
    if result.limit is not None:
        scan.unverified(
            node, f"pickle too large, too deep or oddly framed: {result.limit.message}",
            result.limit.offset,
        )  # fmt: skip
        return True
    if result.pickles:
        return True
    error = result.error
    where = f"{error.message} at byte {error.offset}" if error else "empty"
    if claimed:
        reason = f"not a valid pickle: {where}"
        if reasons is None:
            scan.unverified(node, reason, error.offset if error else 0)
        else:  # reported unless the name's claim is borne out otherwise (compressed...)
            reasons["pickle"] = reasons["torch"] = reason
        return bool(counted)
    proto = len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
    if proto and result.error_opcodes > PROTO_GRACE_OPCODES:
        scan.unverified(
            node, f"starts like a pickle (protocol {head[1]}) but breaks: {where}",
            error.offset if error else 0,
        )  # fmt: skip
        return True
    return bool(counted)


def _judge_imports(scan: FileScan, node: Node, result: Walk, note: str = "") -> int:
    counted = 0
    for found in result.imports:
        problem = judge_import(found, scan.unsafe_globals)
        if problem is None:
            continue
        if problem.severity == UNVERIFIED and not found.completed and not found.used:
            continue  # imported by a pickle that fails before it could be called
        if note:
            problem = Problem(problem.offset, problem.severity, f"{problem.detail}; {note}",
                              problem.module, problem.name)  # fmt: skip
        scan.report(node, problem)
        counted += 1
    return counted


def judge_import(found: Import, unsafe_globals: frozenset[str]) -> Problem | None:
    shown = f"{found.module}.{found.name}"
    if found.how == "computed":
        return Problem(found.offset, UNSAFE,
                       f"imports a global whose name is computed while loading ({shown})",
                       found.module, found.name)  # fmt: skip
    if found.how == "forgotten":
        return Problem(found.offset, UNVERIFIED,
                       "imports a global the scanner lost track of: the pickle is too large "
                       "to follow", found.module, found.name)  # fmt: skip
    if found.how == "extension":
        return Problem(found.offset, UNVERIFIED,
                       f"imports through {found.name}, whatever the loading process registered",
                       found.module, found.name)  # fmt: skip
    verdict = policy.classify(found.module, found.name, unsafe_globals)
    if verdict.severity == policy.SAFE:
        return None
    detail = f"imports {shown} ({verdict.reason})"
    if found.note:
        detail = f"{detail}; {found.note}"
    return Problem(found.offset, verdict.severity, detail, found.module, found.name)


# -- recognising formats -------------------------------------------------------------------


def _compression(head: bytes) -> str | None:
    if head.startswith(b"\x1f\x8b\x08"):
        return "gzip"
    if head.startswith(b"BZh") and head[3:4].isdigit() and head[4:10] in (
        b"1AY&SY", b"\x17rE8P\x90"
    ):  # fmt: skip
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith(b"\x5d\x00\x00") and len(head) >= 13:
        return "lzma"
    if head[:2] in (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda"):
        return "zlib"
    if head.startswith(b"ZF") and len(head) >= 20:
        try:
            int(head[2:20], 16)
        except ValueError:
            return None
        return "zfile"
    return None


_WEAK_MAGIC = {"lzma", "zlib", "zfile"}


def _hdf5_offset(head: bytes) -> int | None:
    for offset in (0, 512, 1024, 2048):
        if head[offset : offset + 8] == b"\x89HDF\r\n\x1a\n":
            return offset
    return None


def _safetensors_like(head: bytes) -> bool:
    return len(head) >= 10 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < 2**40


def _recognise(scan: FileScan, node: Node, head: bytes, tail: bytes, claims: set[str],
               stack: ExitStack) -> set[str]:  # fmt: skip
    found: set[str] = set()
    kind = _compression(head)
    if kind is not None:
        found |= _decompressed(scan, node, kind, strong=kind not in _WEAK_MAGIC)
    if head.startswith(b"PK\x03\x04") or b"PK\x05\x06" in tail:
        found |= _zip(scan, node, strong=head.startswith(b"PK\x03\x04") or "zip" in claims)
    if _tar_header(head) is not None:
        found |= _tar(scan, node)
    if head.startswith(b"\x93NUMPY"):
        found |= _npy(scan, node)
    if "safetensors" in claims:
        found |= _safetensors(scan, node)
    if head.startswith(b"GGUF"):
        found |= _gguf(scan, node)
    if "onnx" in claims or (head[:1] == b"\x08" and "savedmodel" not in claims):
        found |= _onnx(scan, node, claimed="onnx" in claims)
    if "savedmodel" in claims or _extension(node.name) == ".pb":
        found |= _tf_graph(scan, node, claimed="savedmodel" in claims)
    if _hdf5_offset(head) is not None:
        found |= _hdf5(scan, node)
    return found


def _child(node: Node, part: str, opener: Callable[[], BinaryIO], size: int, scan: FileScan,
           **extra) -> Node:  # fmt: skip
    return Node((*node.path, part), part, opener, size, node.depth + 1, **extra)


def _deeper(scan: FileScan, node: Node, what: str) -> bool:
    """Whether `node`'s content may be opened; if not, say so."""
    limit = scan.budget.limits.max_depth
    if node.depth >= limit:
        scan.unverified(node, f"{what} nested deeper than {limit} levels (limit max_depth)")
        return False
    return True


def _spooled_opener(spool, scan: FileScan) -> Callable[[], BinaryIO]:
    size = size_of(spool)
    return lambda: Metered(Window(spool, 0, size), scan.budget)


def _decompressed(scan: FileScan, node: Node, kind: str, *, strong: bool) -> set[str]:
    if not _deeper(scan, node, f"{kind} stream"):
        return {kind if kind != "zfile" else "zlib"}
    with node.open() as stream:
        if kind == "zfile":
            stream.read(20)  # "ZF" and the length in hex; joblib < 0.10
            rest = stream.read(1)
            if rest != b" ":
                stream.seek(20)
            kind = "zlib"
        try:
            spool, produced, note = decompress_to(kind, stream, scan.budget)
        except DecompressError as exc:
            spool = exc.spool
            if not strong and exc.produced == 0:
                spool.close()
                return set()  # weak magic that does not decompress: not compressed
            scan.unverified(node, str(exc))
            produced, note = exc.produced, ""
            if produced == 0:
                spool.close()
                return {kind}
        except Exceeded as exc:
            if exc.limit != "max_ratio":
                raise
            scan.unverified(node, exc.message)
            return {kind}
    with spool:
        if note:
            scan.unverified(node, note)
        name = node.name
        stem, extension = os.path.splitext(name)
        inner = stem if _NAME_CLAIMS.get(extension.lower()) == kind or (
            kind == "gzip" and extension.lower() == ".tgz") else f"<{kind}>"  # fmt: skip
        if kind == "gzip" and extension.lower() == ".tgz":
            inner = stem + ".tar"
        child = _child(node, inner, _spooled_opener(spool, scan), produced, scan)
        return {kind} | _scan_child(scan, child)


def _scan_child(scan: FileScan, child: Node) -> set[str]:
    try:
        return scan_node(scan, child)
    except Exceeded as exc:
        if exc.limit != "max_ratio":
            raise
        scan.unverified(child, exc.message)
        return set()


# -- zip -----------------------------------------------------------------------------------

_TORCHSCRIPT = re.compile(r"(^|/)code/__torch__/")


def _zip(scan: FileScan, node: Node, *, strong: bool) -> set[str]:
    with ExitStack() as stack:
        stream = stack.enter_context(node.open())
        try:
            archive = stack.enter_context(zipfile.ZipFile(stream))
            infos = archive.infolist()
        except Exceeded:
            raise
        except Exception as exc:  # zipfile raises many kinds on a damaged archive
            if strong:
                scan.unverified(node, f"unreadable zip archive: {exc}")
            return set()
        if not _deeper(scan, node, "zip archive"):
            return {"zip"}
        found = {"zip"}
        names = {info.filename for info in infos}
        keras = _keras_like(node, names)
        if any(_TORCHSCRIPT.search(name) for name in names):
            scan.unverified(node, "TorchScript program (code/__torch__/...): it runs when "
                            "loaded with torch.jit.load, and is not inspected")  # fmt: skip
        for info in infos:
            scan.budget.member()
            if info.is_dir() and info.file_size == 0:
                continue
            with ExitStack() as member_stack:  # a decompressed member's spool, freed after
                child_node = _zip_member(scan, node, archive, stream, info, member_stack)
                if child_node is None:
                    continue
                child_node.keras_weights = keras and _extension(info.filename) in (
                    ".h5", ".hdf5"
                )  # fmt: skip
                if keras and info.filename == "config.json":
                    _judge_keras_member(scan, child_node)
                    found.add("keras")
                found |= _scan_child(scan, child_node)
        return found


def _zip_member(scan: FileScan, node: Node, archive: zipfile.ZipFile, stream: BinaryIO,
                info: zipfile.ZipInfo, stack: ExitStack) -> Node | None:  # fmt: skip
    part = info.filename
    label = Node((*node.path, part), part, node.open, 0, node.depth + 1)
    if info.flag_bits & 0x1:
        scan.unverified(label, "encrypted zip member: not inspected")
        return None
    if info.compress_type == zipfile.ZIP_STORED:
        stream.seek(info.header_offset)
        header = stream.read(30)
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            scan.unverified(label, "zip member's local header is missing or damaged")
            return None
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        start = info.header_offset + 30 + name_length + extra_length
        size = info.file_size
        if start + size > node.size:
            scan.unverified(label, "zip member runs past the end of the archive")
            size = max(0, node.size - start)
        base = stream

        def opener(base=base, start=start, size=size):
            return Metered(Window(base, start, size), scan.budget)

        return _child(node, part, opener, size, scan)
    try:
        member = archive.open(info)
    except Exceeded:
        raise
    except Exception as exc:  # unsupported compression, bad header
        scan.unverified(label, f"cannot open zip member: {exc}")
        return None
    spool = stack.enter_context(new_spool())
    produced = 0
    try:
        with member:
            while True:
                piece = member.read(1024 * 1024)
                if not piece:
                    break
                spool.write(piece)
                produced += len(piece)
                scan.budget.expand(len(piece), produced, info.compress_size)
    except Exceeded as exc:
        if exc.limit != "max_ratio":
            raise
        scan.unverified(label, exc.message)
        return None
    except Exception as exc:  # a bad CRC, corrupt deflate data
        scan.unverified(label, f"unreadable zip member: {exc}")
    spool.seek(0)
    return _child(node, part, _spooled_opener(spool, scan), produced, scan)


# -- tar -----------------------------------------------------------------------------------

_TAR_REGULAR = {tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE}
_MAX_TAR_META = 1024 * 1024


def _tar_header(block: bytes) -> tarfile.TarInfo | None:
    if len(block) < 512 or block[:512] == b"\0" * 512:
        return None
    try:
        return tarfile.TarInfo.frombuf(block[:512], "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return None


def _tar(scan: FileScan, node: Node) -> set[str]:
    if not _deeper(scan, node, "tar archive"):
        return {"tar"}
    found = {"tar"}
    with node.open() as stream:
        for item in _tar_members(stream, node.size):
            if isinstance(item, str):
                scan.unverified(node, item)
                break
            name, start, size = item
            scan.budget.member()

            def opener(start=start, size=size, base=stream):
                return Metered(Window(base, start, size), scan.budget)

            found |= _scan_child(scan, _child(node, name, opener, size, scan))
    return found


def _tar_members(stream: BinaryIO, size: int) -> Iterator[tuple[str, int, int] | str]:
    """(name, data offset, size) of each regular member, or a message where it breaks."""
    position = 0
    long_name: str | None = None
    pax: dict[str, str] = {}
    while position + 512 <= size:
        stream.seek(position)
        block = stream.read(512)
        if block == b"\0" * 512:
            return
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            yield f"damaged tar header at byte {position}: {exc}"
            return
        data = position + 512
        length = int(pax.get("size", info.size)) if info.type not in (
            tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE) else info.size  # fmt: skip
        if data + length > size:
            yield f"tar member {info.name!r} runs past the end of the archive"
            return
        if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                         tarfile.GNUTYPE_LONGNAME):  # fmt: skip
            if length > _MAX_TAR_META:
                yield "tar extended header too large to inspect"
                return
            content = stream.read(length)
            if info.type == tarfile.GNUTYPE_LONGNAME:
                long_name = content.rstrip(b"\0").decode("utf-8", "surrogateescape")
            elif info.type != tarfile.XGLTYPE:
                pax = _pax_records(content)
        elif info.type == tarfile.GNUTYPE_SPARSE:
            yield f"sparse tar member {info.name!r}: not inspected"
            return
        else:
            name = pax.get("path") or long_name or info.name
            if info.type in _TAR_REGULAR:
                yield name, data, length
            long_name, pax = None, {}
        position = data + -(-length // 512) * 512


def _pax_records(content: bytes) -> dict[str, str]:
    records = {}
    for match in re.finditer(rb"(\d+) ([^=\n]+)=", content):
        length, key = int(match.group(1)), match.group(2)
        start = match.start()
        value = content[match.end() : start + length - 1]
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
    return records


# -- NumPy .npy ----------------------------------------------------------------------------


def _npy(scan: FileScan, node: Node) -> set[str]:
    with node.open() as stream:
        reader = Reader(stream)
        try:
            descr = _npy_descr(reader)
        except PickleError as exc:
            scan.unverified(node, f"unreadable .npy header: {exc.message}", exc.offset)
            return set()
        if not _descr_has_object(descr):
            return {"npy"}
        # numpy.load reads the object array with plain pickle.load.
        result = walk(reader, joblib=False)
    inner = Node(node.path, node.name, node.open, node.size, node.depth)
    judge_walk(scan, inner, result, b"", claimed=True)
    return {"npy", "pickle"}


def _npy_descr(reader: Reader) -> object:
    reader.read(6)
    major = reader.read_byte()
    reader.read_byte()
    if major not in (1, 2, 3):
        raise PickleError(6, f"unsupported .npy version {major}")
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
    if isinstance(descr, str):
        return descr.lstrip("<>|=").startswith("O")
    if isinstance(descr, list):
        return any(
            isinstance(entry, tuple) and len(entry) >= 2 and _descr_has_object(entry[1])
            for entry in descr
        )
    return True  # numpy would reject anything else; flag it rather than guess


# -- safetensors ---------------------------------------------------------------------------

_SAFETENSORS_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16,
    "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "F64": 64, "I64": 64,
    "U64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}  # fmt: skip


def _safetensors(scan: FileScan, node: Node) -> set[str]:
    try:
        with node.open() as stream:
            _check_safetensors(stream, node.size)
    except ValueError as exc:
        scan.unverified(node, f"not valid safetensors: {exc}")
        return set()
    return {"safetensors"}


def _check_safetensors(stream: BinaryIO, size: int) -> None:
    head = stream.read(8)
    if len(head) < 8:
        raise ValueError("shorter than its 8-byte header length")
    length = struct.unpack("<Q", head)[0]
    if length > size - 8:
        raise ValueError(f"header length {length} runs past the end of the file")
    if length > _MAX_JSON:
        raise ValueError(f"header of {length} bytes is too large to inspect")
    raw = stream.read(length)
    if not raw.startswith(b"{"):
        raise ValueError("header is not a JSON object")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise ValueError("__metadata__ must map strings to strings")
    spans = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"tensor {name!r} is not {{dtype, shape, data_offsets}}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _SAFETENSORS_BITS:
            raise ValueError(f"tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
        ):
            raise ValueError(f"tensor {name!r} has a bad shape")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) for n in offsets)
            and 0 <= offsets[0] <= offsets[1]
        ):
            raise ValueError(f"tensor {name!r} has bad data_offsets")
        count = 1
        for n in shape:
            count *= n
        bits = count * _SAFETENSORS_BITS[dtype]
        if bits % 8 or bits // 8 != offsets[1] - offsets[0]:
            raise ValueError(f"tensor {name!r}: data_offsets do not match its dtype and shape")
        spans.append((offsets[0], offsets[1], name))
    data = size - 8 - length
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            what = "overlaps another" if begin < end else "leaves a gap before it"
            raise ValueError(f"tensor {name!r} {what}: offsets must tile the data exactly")
        end = stop
    if end != data:
        raise ValueError(f"tensors cover {end} bytes of {data}: offsets must tile the data")


# -- GGUF ----------------------------------------------------------------------------------

# ggml types: (elements per block, bytes per block), for those whose layout is certain.
_GGML_TYPES = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176),
    14: (256, 210), 15: (256, 292), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8),
    28: (1, 8), 30: (1, 2),
}  # fmt: skip
_GGUF_SCALARS = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
_GGUF_MAX_COUNT = 10_000_000


class _GGUFError(ValueError):
    pass


def _gguf(scan: FileScan, node: Node) -> set[str]:
    try:
        with node.open() as stream:
            _check_gguf(Reader(stream), node.size)
    except (_GGUFError, PickleError) as exc:
        scan.unverified(node, f"not a valid GGUF file: {getattr(exc, 'message', exc)}")
        return set()
    return {"gguf"}


def _check_gguf(reader: Reader, size: int) -> None:
    def unpack(fmt: str):
        return struct.unpack(fmt, reader.read(struct.calcsize(fmt)))[0]

    reader.read(4)
    version = unpack("<I")
    if version not in (1, 2, 3):
        raise _GGUFError(f"unsupported version {version}")
    count_fmt = "<I" if version == 1 else "<Q"
    tensors, kvs = unpack(count_fmt), unpack(count_fmt)
    if tensors > _GGUF_MAX_COUNT or kvs > _GGUF_MAX_COUNT:
        raise _GGUFError("implausible tensor or key counts")

    def string() -> str:
        n = unpack(count_fmt)
        if n > size - reader.position:
            raise _GGUFError("a string runs past the end of the file")
        if n > 65536:
            reader.skip(n)
            return ""
        return reader.read(n).decode("utf-8", "replace")

    def value(kind: int, depth: int = 0) -> object:
        if kind in _GGUF_SCALARS:
            data = reader.read(_GGUF_SCALARS[kind])
            return int.from_bytes(data, "little") if kind in (4, 10) else data
        if kind == _GGUF_STRING:
            return string()
        if kind == _GGUF_ARRAY:
            if depth > 4:
                raise _GGUFError("arrays nested too deeply")
            item, n = unpack("<I"), unpack(count_fmt)
            if item in _GGUF_SCALARS:
                if n * _GGUF_SCALARS[item] > size - reader.position:
                    raise _GGUFError("an array runs past the end of the file")
                reader.skip(n * _GGUF_SCALARS[item])
                return None
            if item not in (_GGUF_STRING, _GGUF_ARRAY) or n > size - reader.position:
                raise _GGUFError(f"bad array of type {item}")
            for _ in range(n):
                value(item, depth + 1)
            return None
        raise _GGUFError(f"unknown value type {kind}")

    alignment = 32
    for _ in range(kvs):
        key = string()
        kind = unpack("<I")
        result = value(kind)
        if key == "general.alignment" and isinstance(result, int):
            alignment = result
    if alignment <= 0 or alignment & (alignment - 1):
        raise _GGUFError(f"alignment {alignment} is not a power of two")
    infos = []
    for _ in range(tensors):
        name = string()
        dims = unpack("<I")
        if dims > 8:
            raise _GGUFError(f"tensor {name!r} has {dims} dimensions")
        shape = [unpack(count_fmt) for _ in range(dims)]
        kind, offset = unpack("<I"), unpack("<Q")
        if kind >= 64:
            raise _GGUFError(f"tensor {name!r} has unknown type {kind}")
        infos.append((name, shape, kind, offset))
    data_start = -(-reader.position // alignment) * alignment
    data_size = size - data_start
    for name, shape, kind, offset in infos:
        if offset % alignment:
            raise _GGUFError(f"tensor {name!r} is not aligned")
        nbytes = 0
        if kind in _GGML_TYPES:
            per_block, block_bytes = _GGML_TYPES[kind]
            count = 1
            for n in shape:
                count *= n
            nbytes = -(-count // per_block) * block_bytes
        if offset + nbytes > data_size:
            raise _GGUFError(f"tensor {name!r} lies outside the file")


# -- ONNX ----------------------------------------------------------------------------------

# Domains whose operators ship with ONNX and onnxruntime itself. Any other domain is a
# custom operator set: its kernels are native code (or Python, onnxruntime-extensions'
# PyOp) that the loading process must register. The model alone cannot be proven to run
# only known code, so each custom domain is an unverified finding.
STANDARD_ONNX_DOMAINS = frozenset(
    {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training",
     "com.microsoft", "com.microsoft.nchwc", "com.microsoft.experimental"}
)  # fmt: skip


def _onnx(scan: FileScan, node: Node, *, claimed: bool) -> set[str]:
    try:
        with node.open() as stream:
            info = onnx_io.scan_onnx(stream, node.size)
    except (onnx_io.OnnxFormatError, PickleError) as exc:
        if claimed:
            scan.unverified(node, f"not a valid ONNX model: {exc}")
        return set()
    for domain in sorted(info["custom_domains"] - STANDARD_ONNX_DOMAINS):
        scan.unverified(
            node, f"custom ONNX operator domain {domain!r}: its kernels come from a library "
            "the loader must register, not from the model"
        )  # fmt: skip
    for location in info["external"]:
        problem = _external_problem(scan, node, location)
        if problem:
            scan.unverified(node, f"external data {location!r} {problem}")
    return {"onnx"}


def _external_problem(scan: FileScan, node: Node, location: str) -> str | None:
    if not location:
        return "has no location"
    if location.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", location) or "\0" in location:
        return "is an absolute path"
    parts = location.replace("\\", "/").split("/")
    if ".." in parts:
        return "leaves the model's directory"
    if node.path:
        return "belongs to a model inside an archive: it cannot be resolved in the version"
    if scan.version_paths is None:
        return None
    target = posixpath.normpath(posixpath.join(posixpath.dirname(scan.file), *parts))
    if target not in scan.version_paths:
        return "is not a file of this version"
    return None


# -- TensorFlow graphs ---------------------------------------------------------------------

# Ops that read or write files, or run Python, when the graph runs (after modelscan's and
# TensorFlow's saved_model_cli denylists). The saver ops every SavedModel carries
# (SaveV2, RestoreV2, MergeV2Checkpoints) write only where the caller points them.
UNSAFE_TF_OPS = frozenset({
    "ReadFile", "WriteFile", "MatchingFiles", "PyFunc", "PyFuncStateless", "EagerPyFunc",
    "WholeFileReader", "WholeFileReaderV2", "ImmutableConst", "TextLineDataset",
    "TextLineDatasetV2", "TFRecordDataset", "TFRecordDatasetV2", "FixedLengthRecordDataset",
    "FixedLengthRecordDatasetV2", "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3",
    "DebugNanCount", "DebugNumericSummary", "DebugNumericSummaryV2", "LoadAndRemapMatrix",
    "Save", "SaveSlices", "DeleteFile", "RecursivelyCreateDir", "CreateSummaryFileWriter",
    "WriteSummary", "ExperimentalDatasetToTFRecord", "DatasetToTFRecord",
})  # fmt: skip
UNVERIFIED_TF_OPS = frozenset({
    "PrintV2", "InitializeTableFromTextFile", "InitializeTableFromTextFileV2",
})  # fmt: skip


def _tf_graph(scan: FileScan, node: Node, *, claimed: bool) -> set[str]:
    try:
        with node.open() as stream:
            ops = onnx_io.scan_tf_graph(stream, node.size, saved_model=claimed)
    except (onnx_io.OnnxFormatError, PickleError) as exc:
        if claimed:
            scan.unverified(node, f"not a valid TensorFlow SavedModel: {exc}")
        return set()
    if ops is None:
        return set()
    for op in sorted(ops & UNSAFE_TF_OPS):
        scan.report(node, Problem(0, UNSAFE, f"TensorFlow op {op} reads or writes files or "
                                  "runs Python when the graph runs"))  # fmt: skip
    for op in sorted(ops & UNVERIFIED_TF_OPS):
        scan.unverified(node, f"TensorFlow op {op} may read or write files")
    return {"savedmodel"}


# -- Keras ---------------------------------------------------------------------------------

_KERAS_MODULES = ("keras", "tf_keras")


def _keras_like(node: Node, names: set[str]) -> bool:
    return "config.json" in names and (
        _extension(node.name) == ".keras" or "metadata.json" in names
    )


def _judge_keras_member(scan: FileScan, member: Node) -> None:
    if member.size > _MAX_JSON:
        scan.unverified(member, "Keras config.json too large to inspect")
        return
    with member.open() as stream:
        raw = stream.read(member.size)
    try:
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        scan.unverified(member, f"Keras config.json is not JSON: {exc}")
        return
    judge_keras_config(scan, member, config)


def _keras_module(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in _KERAS_MODULES)


def judge_keras_config(scan: FileScan, node: Node, config: object) -> None:
    """Lambda layers carry Python bytecode: unsafe. Any custom object (a module outside
    keras, or a registered name of another package) is code the loader must supply and
    trust: unverified."""
    pending = [config]
    seen = 0
    reported: set[str] = set()
    while pending:
        item = pending.pop()
        seen += 1
        if seen > 1_000_000:
            scan.unverified(node, "Keras config too large to inspect")
            return
        if isinstance(item, list):
            pending.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        pending.extend(item.values())
        class_name = item.get("class_name")
        if not isinstance(class_name, str):
            continue
        layer = ""
        if isinstance(item.get("config"), dict) and isinstance(item["config"].get("name"), str):
            layer = f" {item['config']['name']!r}"
        if class_name in ("Lambda", "__lambda__"):
            detail = f"Keras Lambda layer{layer}: it carries Python bytecode that runs on load"
        elif class_name in ("TFOpLambda", "SlicingOpLambda"):
            detail = f"Keras {class_name} layer{layer}: calls a TensorFlow function by name"
            if detail not in reported:
                reported.add(detail)
                scan.unverified(node, detail)
            continue
        else:
            detail = ""
        if detail:
            if detail not in reported:
                reported.add(detail)
                scan.report(node, Problem(0, UNSAFE, detail))
            continue
        module = item.get("module")
        registered = item.get("registered_name")
        custom = ""
        if isinstance(module, str) and module and not _keras_module(module):
            custom = f"Keras custom object {class_name} from module {module!r}"
        elif isinstance(registered, str) and ">" in registered:
            package = registered.split(">", 1)[0]
            if not _keras_module(package):
                custom = f"Keras custom object {registered!r}"
        if custom and custom not in reported:
            reported.add(custom)
            scan.unverified(node, f"{custom}: its code comes from the loader, not the file")


# -- HDF5 ----------------------------------------------------------------------------------


def _hdf5(scan: FileScan, node: Node) -> set[str]:
    if node.keras_weights:
        return {"hdf5"}  # weights of a Keras archive whose config.json was judged
    config = _hdf5_model_config(scan, node)
    if config is None:
        scan.unverified(node, "HDF5 contents not inspected (no readable Keras model_config)")
        return {"hdf5"}
    judge_keras_config(scan, node, config)
    return {"hdf5", "keras"}


def _hdf5_model_config(scan: FileScan, node: Node) -> object | None:
    """Keras 2 stores its model as JSON in the root group's `model_config` attribute; find
    it in the first bytes of the file, without an HDF5 library."""
    limit = min(node.size, _HDF5_SEARCH)
    with node.open() as stream:
        data = stream.read(limit)
    if b"model_config" not in data:
        return None
    decoder = json.JSONDecoder()
    for match in re.finditer(rb'\{\s*"class_name"\s*:', data):
        text = data[match.start() : match.start() + 16 * 2**20].decode("utf-8", "replace")
        try:
            value, _ = decoder.raw_decode(text)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(value, dict) and "config" in value:
            return value
    return None
