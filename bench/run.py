"""Modelgate benchmarks: run them, print one table, keep the results as JSON.

    make bench                                    # everything, the issue's sizes
    make bench SIZE=small                         # a quick run (64 MiB, 1,000/100,000 versions)
    .venv/bin/python bench/run.py --only large-file --size 256M --keep

Each benchmark in BENCHMARKS is a function that takes a `Context` and returns table rows
(see bench/core.py). The server under test (gunicorn + a Celery worker on a fresh
Postgres database, see bench/server.py) is started the first time a benchmark asks for
it and shared by the rest of the run. Scratch files live in var/bench/run-*/ on the same
disk as the server's store and are removed at the end unless --keep.

Results go to bench/results/<UTC timestamp>.json with a description of the machine, and
to bench/results/latest.json when every benchmark ran (an --only run leaves it alone).
Exit status: 0 when every row is ok, 1 when a row is not (e.g. the downloaded file
differs), 2 when a benchmark could not run, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

if __package__ in (None, ""):  # run as a script: make `bench` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import (
    api,
    machine,
    makerun,
    monitoring,
    promotion,
    registration,
    report,
    scan,
    storage,
    upload,
)
from bench.core import PRESETS, BenchError, Benchmark, Context, MiB, Options, Row, parse_size
from bench.server import SERVER_SETUP

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / "var" / "bench"

BENCHMARKS: list[Benchmark] = [
    Benchmark(
        api.NAME,
        "registry operations: ops/s, p50/p99 at concurrency 1 and 8, vs MLflow",
        api.run,
    ),
    Benchmark(
        upload.NAME,
        "large files: upload and download vs MLflow's artifacts, cp and sha256sum",
        upload.run,
    ),
    Benchmark(
        promotion.NAME,
        "promotion latency: reviewer's approval → promoted, with a real worker",
        promotion.run,
    ),
    Benchmark(registration.NAME, registration.DESCRIPTION, registration.run),
    Benchmark(
        storage.NAME,
        "blob store: encryption's cost, ranged reads, S3 backend vs boto3",
        storage.run,
    ),
    Benchmark(scan.NAME, scan.DESCRIPTION, scan.run),
    Benchmark(
        makerun.NAME,
        "resolve an alias at c=8 on fresh connections: make-run server (SQLite) vs mlflow server",
        makerun.run,
    ),
    Benchmark(
        monitoring.NAME,
        "monitoring: ingest vs COPY, 1M-record aggregation, serve.py with and without capture",
        monitoring.run,
    ),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = [b.name for b in BENCHMARKS]
    parser = argparse.ArgumentParser(
        description="Run Modelgate's benchmarks against a production-like local server.",
        epilog="Benchmarks: " + "; ".join(f"{b.name}: {b.description}" for b in BENCHMARKS),
    )
    parser.add_argument(
        "--only", choices=names, action="append", help="run only this benchmark (repeatable)"
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="full",
        help="small: a quick run; full (default): the issue's sizes",
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        action="append",
        help="size of a large test file, e.g. 256M or 4G (repeatable; overrides the preset)",
    )
    parser.add_argument(
        "--no-mlflow", action="store_true", help="measure Modelgate alone (no MLflow passes)"
    )
    parser.add_argument(
        "--chunk-size", type=parse_size, default=64 * MiB, help="bytes per upload PUT (default 64M)"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep scratch files, logs and the database after the run",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    return parser.parse_args(argv)


def stop_on_sigterm() -> None:
    # SIGTERM (e.g. from a CI timeout) unwinds like Ctrl-C, so the servers get stopped.
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def describe_error(exc: Exception, ctx: Context) -> str:
    """The error, with the server's log tails when it was running (they show why)."""
    text = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
    notes = list(getattr(exc, "__notes__", []))
    if ctx.server_started:
        notes.append(ctx.server.logs())
    return "\n".join([text, *notes])


def run_benchmarks(selected: list[Benchmark], ctx: Context) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    errors: list[str] = []
    for benchmark in selected:
        print(f"▶ {benchmark.name}: {benchmark.description}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            rows.extend(benchmark.run(ctx))
        except Exception as exc:  # one broken benchmark must not cost the others' numbers
            if not isinstance(exc, BenchError | httpx.HTTPError):
                traceback.print_exc()
            message = describe_error(exc, ctx)
            print(f"✗ {benchmark.name}: {message}", file=sys.stderr)
            errors.append(f"{benchmark.name}: {message}")
            rows.append(Row(benchmark.name, "ERROR", ok=False, note=message.splitlines()[0]))
        print(f"  done in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return rows, errors


def results_document(
    options_json: dict[str, Any],
    started: datetime,
    machine_info: dict[str, Any],
    rows: list[Row],
    errors: list[str],
) -> dict[str, Any]:
    finished = datetime.now(UTC)
    return {
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "duration_seconds": round((finished - started).total_seconds(), 1),
        "command": sys.argv,
        "options": options_json,
        "machine": machine_info,
        "server": SERVER_SETUP,
        "units": {
            "MiB": MiB,
            "mib_per_s": "nbytes / MiB / seconds",
            "rss_growth": "peak RSS - RSS before the upload, per gunicorn process",
        },
        "ok": not errors and all(row.ok for row in rows),
        "errors": errors,
        "results": [row.to_json() for row in rows],
    }


FOOTNOTES = """\
MiB/s = bytes moved / seconds. RSS growth: gunicorn master + workers, sampled every 50 ms,
peak minus the baseline taken before the upload; "max/proc" is the largest growth of one
process, "sum" adds every process's growth (target from the issue: < 100 MiB).
The test file was just written and read, so it is most likely in the page cache for
every row (caches cannot be dropped here); the client shares the machine's CPUs."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for benchmark in BENCHMARKS:
            print(f"{benchmark.name}: {benchmark.description}")
        return 0
    stop_on_sigterm()
    selected = [b for b in BENCHMARKS if not args.only or b.name in args.only]
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    SCRATCH.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"run-{stamp}-", dir=SCRATCH))
    preset = dict(PRESETS[args.preset])
    if args.size:
        preset["sizes"] = tuple(args.size)
    options = Options(
        chunk_size=args.chunk_size, keep=args.keep, compare_mlflow=not args.no_mlflow, **preset
    )
    try:
        machine_info = machine.describe(workdir)
        with Context(options, workdir) as ctx:
            rows, errors = run_benchmarks(selected, ctx)
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"kept scratch files in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    title = f"Modelgate benchmarks — {machine.summary(machine_info)}"
    api_rows = [row for row in rows if row.benchmark == api.NAME and row.ok]
    if api_rows:
        report.print_comparison(api_rows, f"API operations — {title}")
        print(report.API_FOOTNOTES)
    report.print_table([row for row in rows if row not in api_rows], title)
    print(FOOTNOTES)
    options_json = {"only": args.only, "preset": args.preset, **asdict(options)}
    document = results_document(options_json, started, machine_info, rows, errors)
    path = report.write_results(document, stamp, latest=not args.only)
    also = "" if args.only else " (and bench/results/latest.json)"
    print(f"\nresults: {path.relative_to(ROOT)}{also}")
    if errors:
        return 2
    return 0 if all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
