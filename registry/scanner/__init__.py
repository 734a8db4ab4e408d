"""Scanner for unsafe serialized content in uploaded model files.

It reads bytes only: nothing in a file is ever unpickled, imported or executed. Pure
Python, no Django: the registry's worker calls `scan_file` for each file of a version.

Bytes decide, never names: every file, every member of its archives and every stream it
decompresses to is classified by content (formats.py) and also walked as a pickle from its
first byte (pickles.py); every global a pickle imports is judged by an allow-list
(policy.py). A file is

- `clean` when all of it is data, a validated safe format, or pickles whose every global
  is allow-listed;
- `unsafe` when something imports a dangerous name (or a Keras Lambda, a dangerous
  TensorFlow op);
- `unverified` when something could not be proven safe: an unknown global, a file that
  claims a format it does not bear out, a limit crossed. The finding names the reason.

Work is bounded by `Limits` (streams.py): expanded bytes, the expansion ratio, nesting,
archive members and time per file; the `beat` callback keeps the worker's lease alive.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import BinaryIO

from . import formats, policy
from .pickles import Exceeded
from .streams import Budget, Metered, Window, new_spool, size_of

__all__ = ["STATUSES", "Finding", "Limits", "ScanResult", "combine", "policy", "scan_file"]

STATUSES = ("clean", "unsafe", "unverified")
MAX_FINDINGS_PER_FILE = 100
_RANK = {"unsafe": 2, "unverified": 1}
_STATUS_RANK = {"clean": 0, "unverified": 1, "unsafe": 2}


@dataclass(frozen=True)
class Limits:
    max_expanded_bytes: int = 64 * 2**30  # total decompressed bytes read for one file
    max_ratio: float = 200.0  # expanded/compressed, enforced once expanded > ratio_floor
    ratio_floor: int = 64 * 2**20
    max_depth: int = 4  # nesting of archives/compressed streams
    max_members: int = 10_000  # archive members per file, all levels
    seconds_per_file: float = 300.0


@dataclass(frozen=True)
class Finding:
    file: str  # the version file path
    member: str  # where inside it: archive members and decompressed streams joined by "!"
    offset: int  # byte offset in that member or stream (0 when not about one place)
    module: str  # for pickle globals; "" otherwise
    name: str
    severity: str  # "unsafe" | "unverified"
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ScanResult:
    status: str  # one of STATUSES
    findings: list[Finding] = field(default_factory=list)
    # {version path: {"status": ..., "formats": sorted formats recognised in it and inside}}
    files: dict[str, dict] = field(default_factory=dict)


def _status(findings: list[Finding]) -> str:
    worst = max((_RANK[f.severity] for f in findings), default=0)
    return {0: "clean", 1: "unverified", 2: "unsafe"}[worst]


def _kept(findings: list[Finding]) -> list[Finding]:
    """Each finding once; past the cap, the most severe first so unsafe is never dropped."""
    unique = list(dict.fromkeys(findings))
    if len(unique) > MAX_FINDINGS_PER_FILE:
        order = sorted(range(len(unique)), key=lambda i: (-_RANK[unique[i].severity], i))
        keep = set(order[:MAX_FINDINGS_PER_FILE])
        unique = [f for i, f in enumerate(unique) if i in keep]
    return unique


def scan_file(
    path: str,
    open_stream: Callable[[], BinaryIO],
    *,
    limits: Limits = Limits(),
    beat: Callable[[], None] = lambda: None,
    unsafe_globals: frozenset[str] = frozenset(),
    version_paths: frozenset[str] | None = None,
) -> ScanResult:
    """Scan one file of a version. `open_stream()` returns a new binary stream of it on each
    call (seekable or not); `path` is its path in the version, used in findings and to
    resolve ONNX external data against `version_paths` (all file paths of the version)."""
    budget = Budget(limits, beat)
    scan = formats.FileScan(path, budget, frozenset(unsafe_globals), version_paths)
    with ExitStack() as stack:
        root = formats.Node((), path, lambda: None, 0, 0)
        try:
            root = _root(path, open_stream, budget, stack)
            formats.scan_tree(scan, root)
        except Exceeded as exc:
            scan.unverified(root, exc.message)
    findings = _kept(
        [
            Finding(path, member, p.offset, p.module, p.name, p.severity, p.detail)
            for member, p in scan.problems
        ]
    )
    status = _status(findings)
    kinds = sorted(scan.formats) or ["data"]
    return ScanResult(status, findings, {path: {"status": status, "formats": kinds}})


def _root(path: str, open_stream, budget: Budget, stack: ExitStack) -> formats.Node:
    """The file as a node; an unseekable stream is first spooled to a temporary file, since
    zip archives are read from their end and every node is read more than once."""
    probe = open_stream()
    stack.callback(probe.close)
    size = size_of(probe) if _seekable(probe) else None
    if size is not None:
        probe.close()
        return formats.Node((), path, lambda: Metered(open_stream(), budget), size, 0)
    spool = stack.enter_context(new_spool())
    source = Metered(probe, budget)
    shutil.copyfileobj(source, spool, 1024 * 1024)
    size = spool.tell()
    spool.seek(0)
    return formats.Node((), path, lambda: Metered(Window(spool, 0, size), budget), size, 0)


def _seekable(stream: BinaryIO) -> bool:
    try:
        return bool(stream.seekable())
    except Exception:  # a stream that cannot say is read, not seeked
        return False


def combine(results: list[ScanResult]) -> ScanResult:
    """One result for several files: the worst status, all findings, every file's entry."""
    status = max((r.status for r in results), key=_STATUS_RANK.__getitem__, default="clean")
    files: dict[str, dict] = {}
    for result in results:
        files.update(result.files)
    return ScanResult(
        status=status,
        findings=[finding for result in results for finding in result.findings],
        files=files,
    )
