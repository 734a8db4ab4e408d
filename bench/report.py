"""The results table on the terminal and the JSON files under bench/results/."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .core import Row

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# (header, cell of a row, right-aligned): one place, so headers and cells stay in step.
COLUMNS: list[tuple[str, Callable[[Row], str], bool]] = [
    ("benchmark", lambda r: r.benchmark, False),
    ("operation", lambda r: r.operation, False),
    ("MiB/s", lambda r: _number(r.mib_per_s, 1), True),
    ("seconds", lambda r: _number(r.seconds, 2), True),
    ("server CPU s", lambda r: _number(r.server_cpu_seconds, 2), True),
    ("bench CPU s", lambda r: _number(r.bench_cpu_seconds, 2), True),
    ("RSS growth MiB max/proc", lambda r: _number(r.rss_growth_max_mib, 1), True),
    ("RSS growth MiB sum", lambda r: _number(r.rss_growth_sum_mib, 1), True),
    ("ok", lambda r: "yes" if r.ok else "NO", False),
    ("note", lambda r: r.note, False),
]
HEADERS = [header for header, _, _ in COLUMNS]


def cells(row: Row) -> list[str]:
    return [cell(row) for _, cell, _ in COLUMNS]


def plain_table(rows: Sequence[Row]) -> str:
    table = [list(HEADERS), *(cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if right else v.ljust(w)
            for v, w, (_, _, right) in zip(values, widths, COLUMNS, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(table[0]), rule, *(line(values) for values in table[1:])])


def print_table(rows: Sequence[Row], title: str) -> None:
    """With rich on a terminal; as aligned plain text in a pipe or log, or without rich."""
    # rich is optional: not a dependency of the project.
    if not sys.stdout.isatty() or importlib.util.find_spec("rich") is None:
        print(f"\n{title}\n{plain_table(rows)}\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for header, _, right in COLUMNS:
        is_note = header == "note"
        table.add_column(
            header,
            justify="right" if right else "left",
            no_wrap=not is_note,
            ratio=1 if is_note else None,
        )
    for row in rows:
        table.add_row(*cells(row))
    Console().print(table)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    # Written aside and renamed, so a reader never sees half a file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def write_results(data: dict[str, Any], stamp: str, latest: bool = True) -> Path:
    """<stamp>.json, and latest.json too unless `latest` is false (a partial run)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{stamp}.json"
    _write_json(path, data)
    if latest:
        _write_json(RESULTS_DIR / "latest.json", data)
    return path


# --- The side-by-side API table ---------------------------------------------------------
API_FOOTNOTES = """\
ops/s = requests / wall time with that many client threads; p50/p99 of each request's
latency in ms (a fresh connection's includes its TCP connect). ratio = Modelgate ops/s /
MLflow ops/s on the same row. Targets (issue 6): resolve alias and get version >= 3x
MLflow's ops/s at concurrency 8 with p99 < 25 ms; list/search p50 < 50 ms at 1,000,000
versions. MLflow's versions have no metrics, so "search by metric" is Modelgate's alone."""

RESOLVE_OPS = {"resolve alias → version", "get version"}
LIST_OPS = {"list versions (first page)", "search versions by tag", "search versions by metric"}


def _target(op: str, d: dict[str, Any], ratios: list[float], big: bool) -> str:
    if op in RESOLVE_OPS and d["concurrency"] == 8 and not big:
        missed = [f"{r:.1f}x" for r in ratios if r < 3]
        if d["p99_ms"] >= 25:
            missed.append(f"p99 {d['p99_ms']:.0f} ms")
        return "MISSED " + ", ".join(missed) if missed else "met"
    if op in LIST_OPS and big:
        return "met" if d["p50_ms"] < 50 else f"MISSED p50 {d['p50_ms']:.0f} ms"
    return ""


def comparison_lines(rows: Sequence[Row]) -> list[list[str]]:
    systems = list(dict.fromkeys(r.details["system"] for r in rows))
    peers = [s for s in systems if s != "modelgate"]
    cells: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        d = row.details
        key = (d["scale"], row.operation, d["concurrency"], d["connection"])
        cells.setdefault(key, {})[d["system"]] = d
    header = ["operation", "versions", "c", "connection", "Modelgate ops/s", "p50", "p99"]
    for peer in peers:
        header += [f"{peer} ops/s", "p50", "p99", "ratio"]
    header.append("target")
    lines = [header]
    biggest = max((key[0] for key in cells), key=lambda s: int(s.split()[0].replace(",", "")))
    for (scale, op, concurrency, mode), by_system in cells.items():
        mine = by_system.get("modelgate")
        line = [op, scale, str(concurrency), mode]
        line += (
            [f"{mine['ops_s']:.0f}", f"{mine['p50_ms']:.1f}", f"{mine['p99_ms']:.1f}"]
            if mine
            else ["-"] * 3
        )
        ratios = []
        for peer in peers:
            theirs = by_system.get(peer)
            if theirs is None:
                line += ["-"] * 4
                continue
            ratio = mine["ops_s"] / theirs["ops_s"] if mine and theirs["ops_s"] else None
            if ratio is not None:
                ratios.append(ratio)
            line += [
                f"{theirs['ops_s']:.0f}",
                f"{theirs['p50_ms']:.1f}",
                f"{theirs['p99_ms']:.1f}",
                "-" if ratio is None else f"{ratio:.1f}x",
            ]
        line.append(_target(op, mine, ratios, scale == biggest and len(cells) > 1) if mine else "")
        lines.append(line)
    return lines


def print_comparison(rows: Sequence[Row], title: str) -> None:
    lines = comparison_lines(rows)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    left = {0, 1, 3, len(widths) - 1}

    def fmt(values: list[str]) -> str:
        return "  ".join(
            v.ljust(w) if i in left else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    print(f"\n{title}\n{fmt(lines[0])}\n{rule}")
    print("\n".join(fmt(line) for line in lines[1:]) + "\n")


# --- Markdown, for the README: `python -m bench.report [bench/results/latest.json]` -------
def _markdown_table(lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(lines[0]) + " |", "|" + "---|" * len(lines[0])]
    out += [
        "| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines[1:]
    ]
    return "\n".join(out)


def markdown(document: dict[str, Any]) -> str:
    from .machine import summary

    rows = [Row(**{k: v for k, v in r.items() if k != "mib_per_s"}) for r in document["results"]]
    api_rows = [r for r in rows if r.benchmark == "api" and r.ok and "system" in r.details]
    others = [r for r in rows if r not in api_rows]
    parts = [f"Measured {document['started_at'][:16]}Z on {summary(document['machine'])}."]
    if api_rows:
        parts.append(_markdown_table(comparison_lines(api_rows)))
    if others:
        parts.append(_markdown_table([list(HEADERS), *(cells(r) for r in others)]))
    return "\n\n".join(parts)


if __name__ == "__main__":
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS_DIR / "latest.json"
    print(markdown(json.loads(source.read_text())))
