"""Differential test: Modelgate's scanner against picklescan, modelscan and fickling.

The three tools are oracles here, never the server's judge. Every case of
tests/scan_corpus.py is scanned by each tool's Python API and by `scan_file`, and:

(a) every malicious case is not `clean` in Modelgate (`unsafe` or `unverified`);
(b) every case any tool flags is not `clean` in Modelgate (a benign control may name the
    tools known to flag it anyway: those are the tools' false positives, reported);
(c) the canary that every payload would create never appears: nothing ran;
(d) every benign control is `clean` in Modelgate.

The summary printed (and put in the failure message) names, per tool, how many cases it
flags and how many malicious cases it misses that Modelgate catches.

How each tool is run (versions are printed in the summary):
- picklescan: `picklescan.scanner.scan_file_path(path)`, what `picklescan --path` runs;
  flagged when it reports a dangerous global (`issues_count > 0`, its exit code 1).
- modelscan: `ModelScan(settings=DEFAULT_SETTINGS).scan(path)`, what `modelscan -p` runs;
  flagged when it reports any issue.
- fickling: the triage of its own repository scan (fickling/cli.py): a zip (or .pt/.pth)
  goes to `fickling.scan_zip_archive(path, graceful=True)`, a pickle its parser reads (or
  any .bin/.pkl/.pickle) to `fickling.scan_file(path, graceful=True)`, anything else is
  skipped (fickling.polyglot, which the CLI uses to tell, needs torch); flagged
  when a result is not `is_safe` (severity above LIKELY_SAFE, what `fickling
  --check-safety` exits 1 on).
"""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import logging
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from registry.scanner import scan_file

from .scan_corpus import TOOLS, Case, cases

# The landed scanner says clean/warning/unsafe/error; the rewrite clean/unsafe/unverified.
# Anything but "clean" holds the file back.
CLEAN = "clean"


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # CI installs the oracles: a missing one is a failure
        pytest.fail(
            f"oracle {module!r} cannot be imported ({exc}); install the dev dependencies "
            "(picklescan, modelscan, fickling)",
            pytrace=False,
        )


def _picklescan() -> Callable[[Path], tuple[bool, str]]:
    scanner = _require("picklescan.scanner")

    def run(path: Path) -> tuple[bool, str]:
        result = scanner.scan_file_path(str(path))
        note = "scan error" if result.scan_err else ""
        return result.issues_count > 0, note

    return run


def _modelscan() -> Callable[[Path], tuple[bool, str]]:
    modelscan = _require("modelscan.modelscan")
    settings = _require("modelscan.settings")

    def run(path: Path) -> tuple[bool, str]:
        scanner = modelscan.ModelScan(settings=copy.deepcopy(settings.DEFAULT_SETTINGS))
        scanner.scan(str(path))
        note = f"{len(scanner.errors)} errors" if scanner.errors else ""
        return bool(scanner.issues.all_issues), note

    return run


def _fickling() -> Callable[[Path], tuple[bool, str]]:
    fickling = _require("fickling")
    fickle = _require("fickling.fickle")
    cli = _require("fickling.cli")

    def parses(path: Path) -> bool:
        with path.open("rb") as stream:
            try:
                fickle.StackedPickle.load(stream, fail_on_decode_error=True)
            except Exception:  # fickling's parser refuses it: not a pickle to fickling
                return False
        return True

    def run(path: Path) -> tuple[bool, str]:
        # The triage of fickling's own repository scan (cli.py), with its parser standing in
        # for fickling.polyglot, which needs torch.
        ext = path.suffix.lower()
        if zipfile.is_zipfile(path) or ext in cli.HF_ZIP_PICKLE_EXTENSIONS:
            results = list(fickling.scan_zip_archive(str(path), graceful=True).values())
        elif ext in cli.HF_RAW_PICKLE_EXTENSIONS or parses(path):
            results = [fickling.scan_file(str(path), graceful=True)]
        else:
            return False, "skipped"
        note = "errors" if any(result.errors for result in results) else ""
        return any(not result.is_safe for result in results), note

    return run


def _modelgate(path: Path) -> tuple[str, str]:
    result = scan_file(path.name, lambda: path.open("rb"))
    worst = sorted(result.findings, key=lambda f: f.severity != "unsafe")[:1]
    shown = "; ".join(f"{f.severity} {f.module}.{f.name}: {f.detail}"[:120] for f in worst)
    return result.status, shown


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _summary(rows: list[dict], corpus: list[Case]) -> str:
    malicious = [row for row in rows if row["case"].malicious]
    lines = [
        f"corpus: {len(corpus)} cases, {len(malicious)} malicious, "
        f"{len(corpus) - len(malicious)} benign controls",
        f"modelgate: {sum(row['mg'] != CLEAN for row in malicious)}/{len(malicious)} "
        "malicious cases held back (not clean)",
    ]
    for tool in TOOLS:
        flagged = [row for row in rows if row[tool][0]]
        missed = [row for row in malicious if not row[tool][0]]
        caught_by_us = [row for row in missed if row["mg"] != CLEAN]
        false_positives = [row for row in flagged if not row["case"].malicious]
        lines.append(
            f"{tool} {_version(tool)}: flags {len(flagged)} cases "
            f"({len(flagged) - len(false_positives)}/{len(malicious)} malicious, "
            f"{len(false_positives)} benign controls); misses {len(missed)} malicious cases, "
            f"{len(caught_by_us)} of which Modelgate catches"
        )
    width = max(len(case.name) for case in corpus)
    lines.append("")
    lines.append(f"{'case':<{width}}  kind  picklescan modelscan fickling  modelgate")
    for row in rows:
        case = row["case"]
        marks = "  ".join(f"{('FLAG' if row[tool][0] else '-'):<{len(tool) - 1}}" for tool in TOOLS)
        kind = "bad " if case.malicious else "ok  "
        lines.append(f"{case.name:<{width}}  {kind}  {marks}  {row['mg']}")
    return "\n".join(lines)


@pytest.mark.timeout(300)
def test_modelgate_holds_back_everything_the_oracles_flag(tmp_path: Path) -> None:
    logging.disable(logging.CRITICAL)  # the tools log every finding at WARNING
    try:
        oracles = {"picklescan": _picklescan(), "modelscan": _modelscan(), "fickling": _fickling()}
        canary = tmp_path / "canary"
        corpus = cases(canary)
        rows, failures, notes = [], [], []
        for case in corpus:
            folder = tmp_path / case.name
            folder.mkdir()
            path = folder / case.filename
            path.write_bytes(case.data)
            row = {"case": case}
            for tool, run in oracles.items():
                try:
                    row[tool] = run(path)
                except Exception as exc:  # a crash is the tool's miss, never our pass
                    row[tool] = (False, f"crashed: {type(exc).__name__}: {exc}"[:100])
            row["mg"], row["mg_detail"] = _modelgate(path)
            rows.append(row)

            if case.malicious and row["mg"] == CLEAN:
                failures.append(f"(a) {case.name}: malicious, but clean in Modelgate "
                                f"[{case.source}]")  # fmt: skip
            flaggers = [tool for tool in TOOLS if row[tool][0]]
            unexpected = [t for t in flaggers if t not in case.oracle_false_positives]
            if unexpected and row["mg"] == CLEAN:
                failures.append(f"(b) {case.name}: flagged by {', '.join(unexpected)}, "
                                "clean in Modelgate")  # fmt: skip
            if not case.malicious:
                if row["mg"] != CLEAN:
                    failures.append(f"(d) {case.name}: benign control, but {row['mg']} in "
                                    f"Modelgate: {row['mg_detail']}")  # fmt: skip
                stale = sorted(case.oracle_false_positives - set(flaggers))
                if stale:  # the tool improved: reported, so the list can be trimmed
                    notes.append(f"{case.name}: listed as a false positive of "
                                 f"{', '.join(stale)}, which no longer flags it")  # fmt: skip
            if canary.exists():
                failures.append(f"(c) the canary appeared while scanning {case.name}")
                canary.unlink()
    finally:
        logging.disable(logging.NOTSET)

    summary = _summary(rows, corpus) + "".join(f"\nnote: {note}" for note in notes)
    print(summary)
    assert not failures, "\n".join(failures) + "\n\n" + summary
