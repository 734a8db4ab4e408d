"""Scanner for unsafe serialized content in uploaded model files.

It reads bytes only: nothing in a file is ever unpickled, imported or executed. Pickle
streams are found by magic bytes (raw pickles, zip archives such as PyTorch checkpoints,
.npy/.npz, compressed joblib dumps) and every global they import is classified as safe,
unsafe or unknown. Pure Python, no Django: the registry's worker calls `scan_file`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import BinaryIO

from . import formats, policy
from .pickles import Import

__all__ = ["Finding", "ScanResult", "combine", "scan_file"]

MAX_FINDINGS_PER_FILE = 100

# Worst first: status follows the worst severity found.
_RANK = {"unsafe": 3, "error": 2, "unknown": 1}
_STATUS = {"unsafe": "unsafe", "error": "error", "unknown": "warning", None: "clean"}
_STATUS_RANK = {"clean": 0, "warning": 1, "error": 2, "unsafe": 3}


@dataclass(frozen=True)
class Finding:
    file: str  # the version file path, plus "!member" for a zip member
    offset: int  # byte offset of the opcode in the (decompressed or member) stream
    module: str
    name: str
    severity: str  # "unsafe" | "unknown" | "error"
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ScanResult:
    status: str  # "clean" | "warning" | "unsafe" | "error"
    findings: list[Finding] = field(default_factory=list)
    scanned: list[str] = field(default_factory=list)  # files/members holding serialized content


class _Collected:
    """The findings of one file or member: each (module, name) once, at its first offset."""

    def __init__(self) -> None:
        self.first: dict[tuple[str, str, str], Finding] = {}
        self.worst: str | None = None

    def add(self, finding: Finding) -> None:
        self.first.setdefault((finding.severity, finding.module, finding.name), finding)
        if self.worst is None or _RANK[finding.severity] > _RANK[self.worst]:
            self.worst = finding.severity

    def kept(self) -> list[Finding]:
        findings = list(self.first.values())
        if len(findings) > MAX_FINDINGS_PER_FILE:
            # Past the cap, keep the most severe so an unsafe import is never dropped.
            findings.sort(key=lambda f: (-_RANK[f.severity], f.offset))
            findings = findings[:MAX_FINDINGS_PER_FILE]
        return sorted(findings, key=lambda f: f.offset)


def _finding(label: str, item: Import | formats.Problem) -> Finding | None:
    if isinstance(item, formats.Problem):
        return Finding(label, item.offset, "", "", "error", item.message)
    shown = f"{item.module}.{item.name}"
    if item.how == "computed":
        severity = "unsafe"
        detail = f"imports a global whose name is computed while loading ({shown})"
    elif item.how == "forgotten":
        severity = "error"
        detail = "imports a global the scanner lost track of: the pickle is too large to follow"
    elif item.how == "extension":
        severity = "unknown"
        detail = f"imports through {item.name}, whatever the loading process registered for it"
    else:
        verdict = policy.classify(item.module, item.name)
        if verdict.severity == policy.SAFE:
            return None
        severity, detail = verdict.severity, f"imports {shown} ({verdict.reason})"
    if item.note:
        detail = f"{detail}; {item.note}"
    return Finding(label, item.offset, item.module, item.name, severity, detail)


def scan_file(path: str, open_stream: Callable[[], BinaryIO]) -> ScanResult:
    """Scan one file. `open_stream()` must return a new binary stream of it on each call;
    `path` only names the file in findings."""
    collected: dict[str, _Collected] = {}
    scanned: list[str] = []
    for event in formats.events(path, open_stream):
        if event.item is None:
            scanned.append(event.label)
            continue
        finding = _finding(event.label, event.item)
        if finding is not None:
            collected.setdefault(event.label, _Collected()).add(finding)
    worst = max((c.worst for c in collected.values()), key=_RANK.__getitem__, default=None)
    findings = [finding for c in collected.values() for finding in c.kept()]
    return ScanResult(status=_STATUS[worst], findings=findings, scanned=scanned)


def combine(results: list[ScanResult]) -> ScanResult:
    """One result for several files: the worst status, all findings, all scanned streams."""
    status = max((r.status for r in results), key=_STATUS_RANK.__getitem__, default="clean")
    return ScanResult(
        status=status,
        findings=[finding for result in results for finding in result.findings],
        scanned=[name for result in results for name in result.scanned],
    )
