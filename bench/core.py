"""The small framework every benchmark plugs into.

A benchmark is a function `(Context) -> list[Row]`, registered in `bench/run.py` as a
`Benchmark`. The `Context` hands it the options, a scratch directory on the store's disk
and, on first use, a running server (started once and shared by all benchmarks of a run).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import RunningServer

MiB = 1024 * 1024

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": MiB, "g": 1024 * MiB, "t": 1024 * 1024 * MiB}


class BenchError(Exception):
    """The server or the machine did something a benchmark cannot go on from."""


def parse_size(text: str) -> int:
    """'256M', '2G', '2GiB', '1.5g' or a plain byte count; units are binary (M = MiB)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (try 256M or 2G)")
    number, unit = match.groups()
    size = int(float(number) * _UNITS[unit.lower()])
    if size <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return size


def format_size(size: int) -> str:
    for unit, factor in (("GiB", 1024 * MiB), ("MiB", MiB), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:g} {unit}"
    return f"{size} B"


@dataclass
class Row:
    """One line of the results table (and one object in the JSON results).

    `nbytes` is what was moved, so MiB/s is derived rather than computed by each
    benchmark; `*_cpu_seconds` are the CPU time of the server's processes and of the
    benchmark (with the commands it ran); `rss_*` is the server's resident-memory growth.
    """

    benchmark: str
    operation: str
    seconds: float | None = None
    nbytes: int | None = None
    server_cpu_seconds: float | None = None
    bench_cpu_seconds: float | None = None
    rss_growth_max_mib: float | None = None
    rss_growth_sum_mib: float | None = None
    ok: bool = True
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def mib_per_s(self) -> float | None:
        if not self.nbytes or not self.seconds:
            return None
        return self.nbytes / MiB / self.seconds

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "mib_per_s": self.mib_per_s}


@dataclass(frozen=True)
class Options:
    sizes: tuple[int, ...]  # large-file sizes, each uploaded and downloaded
    chunk_size: int
    keep: bool
    api_seconds: float = 5.0  # per (operation, concurrency, connection mode)
    api_max_requests: int = 5000
    api_models: int = 100
    api_versions: int = 100  # per model
    api_big_versions: int = 1_000_000  # Modelgate alone, in total
    mlflow_backends: tuple[str, ...] = ("sqlite", "postgres")
    compare_mlflow: bool = True


# `--preset small` for a quick run while others share the machine; `full` is the issue's.
PRESETS: dict[str, dict[str, Any]] = {
    "small": {
        "sizes": (64 * MiB,),
        "api_seconds": 1.5,
        "api_max_requests": 400,
        "api_models": 10,
        "api_versions": 100,
        "api_big_versions": 100_000,
    },
    "full": {"sizes": (1024 * MiB, 4096 * MiB)},
}


class Context:
    """What a benchmark gets: options, a scratch directory and a lazily started server."""

    def __init__(self, options: Options, workdir: Path):
        self.options = options
        self.workdir = workdir
        self._server: RunningServer | None = None
        self._stack = contextlib.ExitStack()

    @property
    def server(self) -> RunningServer:
        # Started on first use so that benchmarks not needing one (or --only) skip it.
        if self._server is None:
            from .server import run_server

            self._server = self._stack.enter_context(
                run_server(self.workdir / "server", keep=self.options.keep)
            )
        return self._server

    @property
    def server_started(self) -> bool:
        return self._server is not None

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    run: Callable[[Context], list[Row]]
