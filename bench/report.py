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


def write_results(data: dict[str, Any], stamp: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{stamp}.json"
    _write_json(path, data)
    _write_json(RESULTS_DIR / "latest.json", data)
    return path
