"""Large file: a chunked PUT upload and a streamed GET download, beside the machine's limit.

How it measures:

1. Writes a test file of `--size` random bytes (8 MiB `os.urandom` blocks, hashed while
   written) in the run's scratch directory, which is on the same disk as the server's
   store, then `sync`s so later timings do not pay for flushing it.
2. Baselines on that file, each run once after one warm-up read, so the file is most
   likely in the page cache for them and for the upload alike (we cannot drop caches):
   `cp FILE COPY` then `sync` (the row's time is both: the server fsyncs the uploaded file
   before it answers the last chunk), `sha256sum FILE`, and sha256 with Python's hashlib,
   which is what the server and the worker use (OpenSSL; far faster than coreutils 9.1's
   sha256sum on CPUs with SHA extensions).
3. Declares a version with one file, warms every gunicorn worker with a few small
   requests (so Django's lazy imports do not count as upload memory), takes the server's
   RSS baseline and uploads the file in `--chunk-size` PUTs with `Content-Range`, over
   one keep-alive connection, each body streamed from the file in 1 MiB pieces.
   MiB/s = size / wall time of all chunks (the last one includes the server's sha256
   check and fsync).
4. Finalizes and polls the version every 50 ms until the worker marks it `ready`. The
   worker re-hashes the file (compare with the sha256 baselines) and then runs the rest
   of its pipeline (scan, extract, package); the note says when `scan` and `package`
   changed, the JSON keeps every change seen.
5. Downloads the file with a streamed GET into a file (not fsynced), hashing as it reads,
   and checks it is byte-identical by sha256 and size. When curl is installed, downloads
   it once more with curl into /dev/null: what the server can send, without the cost of a
   Python client writing a file on the same two CPUs.

During 3 and 5, a thread samples the RSS of the gunicorn master and its workers every
50 ms; growth = peak - the baseline taken before the upload, per process (the table
shows the largest and the sum). The issue's target is growth < 100 MiB. CPU seconds of
the server's processes and of the benchmark itself show which side was the bottleneck.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from . import mlflow_server
from .core import BenchError, Context, MiB, Row, format_size
from .server import RunningServer
from .usage import ServerUsage, Stopwatch, UsageSampler, tree_cpu

NAME = "large-file"
MODEL = "bench-large"
FILE_PATH = "model.bin"
PIECE = 1 * MiB  # what the client holds in memory at a time, upload and download
WRITE_BLOCK = 8 * MiB
RSS_TARGET_MIB = 100
POLL_SECONDS = 0.05
READY_TIMEOUT = 1800.0
CACHED = "source likely in page cache"


def log(message: str) -> None:
    print(f"  [{NAME}] {message}", file=sys.stderr, flush=True)


# --- The test file and the baselines ---------------------------------------------------
def write_test_file(path: Path, size: int) -> str:
    """Write `size` random bytes to `path` without holding them; return their sha256."""
    hasher = hashlib.sha256()
    with open(path, "wb") as out:
        left = size
        while left:
            block = os.urandom(min(WRITE_BLOCK, left))
            hasher.update(block)
            out.write(block)
            left -= len(block)
    return hasher.hexdigest()


def read_through(path: Path) -> None:
    """One full read, so every measurement after it finds the same (warm) cache."""
    with open(path, "rb") as src:
        while src.read(WRITE_BLOCK):
            pass


def run_command(cmd: list[str]) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr}")
    return result.stdout


def cp_baseline(source: Path, copy: Path, keep: bool) -> Row:
    run_command(["sync"])  # start with no dirty pages of anyone else's
    with Stopwatch() as cp:
        run_command(["cp", str(source), str(copy)])
    with Stopwatch() as sync:
        run_command(["sync"])
    if not keep:
        copy.unlink()
    return Row(
        NAME,
        "cp + sync",
        seconds=cp.seconds + sync.seconds,
        nbytes=source.stat().st_size,
        bench_cpu_seconds=cp.cpu_seconds + sync.cpu_seconds,
        note=f"cp {cp.seconds:.2f}s + sync {sync.seconds:.2f}s; {CACHED}",
        details={"cp_seconds": cp.seconds, "sync_seconds": sync.seconds},
    )


def sha256sum_baseline(source: Path, expected: str) -> Row:
    with Stopwatch() as watch:
        digest = run_command(["sha256sum", str(source)]).split()[0]
    if digest != expected:
        raise BenchError(f"sha256sum says {digest}, the writer hashed {expected}")
    return Row(
        NAME,
        "sha256sum",
        seconds=watch.seconds,
        nbytes=source.stat().st_size,
        bench_cpu_seconds=watch.cpu_seconds,
        note=f"coreutils; {CACHED}",
    )


def hashlib_baseline(source: Path, expected: str) -> Row:
    hasher = hashlib.sha256()
    with Stopwatch() as watch, open(source, "rb") as src:
        while data := src.read(PIECE):  # the piece size the server's store reads with
            hasher.update(data)
    if hasher.hexdigest() != expected:
        raise BenchError(f"hashlib says {hasher.hexdigest()}, the writer hashed {expected}")
    return Row(
        NAME,
        "sha256 (Python hashlib)",
        seconds=watch.seconds,
        nbytes=source.stat().st_size,
        bench_cpu_seconds=watch.cpu_seconds,
        note=f"what server and worker hash with; {CACHED}",
    )


# --- The REST calls ------------------------------------------------------------------
def expect(response: httpx.Response, status: int) -> dict[str, Any]:
    if response.status_code != status:
        request = response.request
        raise BenchError(
            f"{request.method} {request.url.path} (headers {dict(_shown(request.headers))}) "
            f"→ {response.status_code}, expected {status}: {response.text[:1000]}"
        )
    return response.json() if response.content else {}


def _shown(headers: httpx.Headers) -> Iterator[tuple[str, str]]:
    for key, value in headers.items():
        yield key, ("…" if key.lower() == "authorization" else value)


def version_url(number: int) -> str:
    return f"/api/v1/models/{MODEL}/versions/{number}/"


def file_url(number: int) -> str:
    return f"{version_url(number)}files/{FILE_PATH}"


def declare_version(api: httpx.Client, size: int, digest: str) -> int:
    response = api.post("/api/v1/models/", json={"name": MODEL})
    if response.status_code != 409:  # a model left by an earlier benchmark is fine
        expect(response, 201)
    files = [{"path": FILE_PATH, "size": size, "sha256": digest}]
    body = expect(api.post(f"/api/v1/models/{MODEL}/versions/", json={"files": files}), 201)
    if body.get("state") != "uploading":
        raise BenchError(f"a new version is {body.get('state')!r}, expected 'uploading'")
    return int(body["version"])


def warm_up_workers(server: RunningServer, number: int, workers: int = 2) -> None:
    """Serve requests on fresh connections until every worker has answered some."""
    path = version_url(number)
    for _ in range(50):
        with server.client(timeout=30) as fresh:
            expect(fresh.get(path), 200)
        served = server.pids_serving("GET", path)
        if len(served) >= workers and min(served.values()) >= 3:
            return
    log(f"warm-up reached only workers {dict(served)}")


def with_server_usage(row: Row, usage: ServerUsage) -> Row:
    row.server_cpu_seconds = usage.cpu_seconds
    row.rss_growth_max_mib = usage.growth_max_mib
    row.rss_growth_sum_mib = usage.growth_sum_mib
    row.details["server"] = usage.to_json()
    row.details["rss_target_mib"] = RSS_TARGET_MIB
    if usage.growth_max_mib >= RSS_TARGET_MIB:
        row.note += f"; RSS GROWTH ABOVE {RSS_TARGET_MIB} MiB TARGET"
    return row


# --- Upload --------------------------------------------------------------------------
def file_pieces(path: Path, start: int, length: int) -> Iterator[bytes]:
    """`length` bytes of `path` from `start`, in PIECE-sized reads."""
    with open(path, "rb") as src:
        src.seek(start)
        left = length
        while left:
            data = src.read(min(PIECE, left))
            if not data:
                raise BenchError(f"{path} ended {left} bytes early")
            left -= len(data)
            yield data


def client_port(response: httpx.Response) -> int | None:
    stream = response.extensions.get("network_stream")
    addr = stream.get_extra_info("client_addr") if stream is not None else None
    return addr[1] if addr else None


@dataclass
class Upload:
    watch: Stopwatch
    chunks: list[dict[str, Any]] = field(default_factory=list)


def upload_chunks(api: httpx.Client, number: int, source: Path, size: int, chunk: int) -> Upload:
    url = file_url(number)
    result = Upload(Stopwatch())
    with result.watch:
        for start in range(0, size, chunk):
            end = min(start + chunk, size) - 1
            length = end - start + 1
            headers = {
                # An explicit Content-Length keeps httpx from sending the generator chunked.
                "Content-Length": str(length),
                "Content-Range": f"bytes {start}-{end}/{size}",
                "Content-Type": "application/octet-stream",
            }
            started = time.perf_counter()
            response = api.put(url, content=file_pieces(source, start, length), headers=headers)
            body = expect(response, 200)
            seconds = time.perf_counter() - started
            if body.get("received") != end + 1 or body.get("complete") != (end + 1 == size):
                raise BenchError(f"PUT bytes {start}-{end}/{size} answered {body}")
            result.chunks.append(
                {
                    "start": start,
                    "length": length,
                    "seconds": seconds,
                    "port": client_port(response),
                }
            )
    return result


def upload_row(upload: Upload, size: int, chunk: int, usage: ServerUsage, pids: dict) -> Row:
    times = sorted(c["seconds"] for c in upload.chunks)
    ports = {c["port"] for c in upload.chunks}
    note = (
        f"{len(upload.chunks)} x {format_size(chunk)}, {len(ports)} connection(s), "
        f"{len(pids)} worker(s); median chunk {times[len(times) // 2]:.2f}s, "
        f"last {upload.chunks[-1]['seconds']:.2f}s (sha256 check + fsync)"
    )
    row = Row(
        NAME,
        "upload (chunked PUT)",
        seconds=upload.watch.seconds,
        nbytes=size,
        bench_cpu_seconds=upload.watch.cpu_seconds,
        note=note,
        details={"chunks": upload.chunks, "worker_pids": pids},
    )
    return with_server_usage(row, usage)


# --- Finalize → ready ----------------------------------------------------------------
def progress_marks(body: dict[str, Any]) -> dict[str, Any]:
    """What a version's JSON shows of the worker's progress (whichever fields it has)."""
    marks = {"state": body.get("state")}
    if "pipeline" in body:
        marks["pipeline"] = body["pipeline"]
    if isinstance(body.get("scan"), dict):
        marks["scan"] = body["scan"].get("status")
    if isinstance(body.get("package"), dict):
        marks["package"] = body["package"].get("state")
    return marks


def finalize_and_wait(api: httpx.Client, server: RunningServer, number: int, size: int) -> Row:
    # The Celery worker does this work, so its CPU is this row's server CPU.
    before = progress_marks(expect(api.get(version_url(number)), 200))
    worker_cpu = tree_cpu(server.worker.pid)
    started = time.perf_counter()
    expect(api.post(f"{version_url(number)}finalize/"), 200)
    finalized = time.perf_counter() - started
    # Each change of the progress fields, with when it was seen: the steps' timeline.
    timeline: list[dict[str, Any]] = []
    while True:
        body = expect(api.get(version_url(number)), 200)
        marks = progress_marks(body)
        if not timeline or timeline[-1]["marks"] != marks:
            timeline.append({"seconds": round(time.perf_counter() - started, 2), "marks": marks})
        if body["state"] == "ready":
            break
        if body["state"] != "processing":
            raise BenchError(
                f"version {number} went {body['state']!r}: {body.get('status_reason')!r}"
            )
        if time.perf_counter() - started > READY_TIMEOUT:
            raise BenchError(f"version {number} still processing after {READY_TIMEOUT:.0f}s")
        time.sleep(POLL_SECONDS)
    seconds = time.perf_counter() - started
    return Row(
        NAME,
        "finalize→ready",
        seconds=seconds,
        nbytes=size,
        server_cpu_seconds=tree_cpu(server.worker.pid) - worker_cpu,
        note=f"worker's whole pipeline; {describe_timeline(before, timeline)}",
        details={
            "finalize_request_seconds": finalized,
            "before": before,
            "timeline": timeline,
            "scan": body.get("scan"),  # what the scanner made of random bytes
        },
    )


def describe_timeline(before: dict[str, Any], timeline: list[dict[str, Any]]) -> str:
    """'scan=clean @3.1s, package=ready @9.8s': when scan and package got their last value."""
    last = timeline[-1]["marks"]
    parts = []
    for key in ("scan", "package"):
        if key in last and last[key] != before.get(key):
            seconds = next(e["seconds"] for e in timeline if e["marks"].get(key) == last[key])
            parts.append(f"{key}={last[key]} @{seconds:.1f}s")
    return ", ".join(parts) or f"{len(timeline)} progress change(s) seen"


# --- Download ------------------------------------------------------------------------
@dataclass
class Download:
    watch: Stopwatch
    nbytes: int
    sha256: str


def download_file(api: httpx.Client, number: int, dest: Path) -> Download:
    hasher = hashlib.sha256()
    nbytes = 0
    with (
        Stopwatch() as watch,
        api.stream("GET", file_url(number)) as response,
        open(dest, "wb") as out,
    ):
        if response.status_code != 200:
            response.read()
            expect(response, 200)
        for data in response.iter_raw(PIECE):
            hasher.update(data)
            out.write(data)
            nbytes += len(data)
    return Download(watch, nbytes, hasher.hexdigest())


def download_row(download: Download, size: int, digest: str, usage: ServerUsage) -> Row:
    identical = download.nbytes == size and download.sha256 == digest
    note = (
        "byte-identical (sha256)"
        if identical
        else (
            f"DIFFERS: got {download.nbytes} bytes sha256 {download.sha256}, "
            f"sent {size} bytes sha256 {digest}"
        )
    )
    row = Row(
        NAME,
        "download (GET)",
        seconds=download.watch.seconds,
        nbytes=download.nbytes,
        bench_cpu_seconds=download.watch.cpu_seconds,
        ok=identical,
        note=note + "; httpx, hashed, written to a file without fsync",
        details={"sha256": download.sha256},
    )
    return with_server_usage(row, usage)


def curl_download(server: RunningServer, number: int, size: int, sampler: UsageSampler) -> Row:
    cmd = [
        "curl", "--silent", "--show-error", "--fail", "--output", "/dev/null",
        "--write-out", "%{size_download}",
        "--header", f"Authorization: Bearer {server.token}",
        server.base_url + file_url(number),
    ]  # fmt: skip
    with sampler.measure() as usage, Stopwatch() as watch:
        received = int(run_command(cmd))
    row = Row(
        NAME,
        "download (GET, curl)",
        seconds=watch.seconds,
        nbytes=received,
        bench_cpu_seconds=watch.cpu_seconds,
        ok=received == size,
        note="to /dev/null: what the server sends, without client-side costs",
    )
    if received != size:
        row.note = f"RECEIVED {received} of {size} bytes"
    return with_server_usage(row, usage)


# --- MLflow's artifact store (--serve-artifacts): the peer's upload and download --------
def mlflow_transfers(mlflow, source: Path, size: int, digest: str, workdir: Path) -> list[Row]:
    """One streamed PUT and one GET of the file through MLflow's artifact proxy."""
    url = f"{mlflow.base_url}/api/2.0/mlflow-artifacts/artifacts/bench/{size}/{FILE_PATH}"
    sampler = UsageSampler(mlflow.proc.pid)
    with httpx.Client(timeout=httpx.Timeout(1800.0, connect=10.0)) as client:
        client.get(f"{mlflow.base_url}/health")  # warm the connection and the workers
        sampler.take_baseline()
        headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        with sampler.measure() as up_usage, Stopwatch() as up:
            response = client.put(url, content=file_pieces(source, 0, size), headers=headers)
        if response.status_code != 200:
            raise BenchError(f"MLflow PUT → {response.status_code}: {response.text[:500]}")
        upload = Row(NAME, f"upload {format_size(size)} (MLflow artifacts PUT)",
                     seconds=up.seconds, nbytes=size, bench_cpu_seconds=up.cpu_seconds,
                     note="one streamed PUT; MLflow neither hashes nor verifies")  # fmt: skip
        dest = workdir / "mlflow.download"
        hasher, nbytes = hashlib.sha256(), 0
        with (
            sampler.measure() as down_usage,
            Stopwatch() as down,
            client.stream("GET", url) as got,
            open(dest, "wb") as out,
        ):
            if got.status_code != 200:
                raise BenchError(f"MLflow GET → {got.status_code}")
            for data in got.iter_raw(PIECE):
                hasher.update(data)
                out.write(data)
                nbytes += len(data)
        dest.unlink()
    identical = nbytes == size and hasher.hexdigest() == digest
    download = Row(NAME, f"download {format_size(size)} (MLflow artifacts GET)",
                   seconds=down.seconds, nbytes=nbytes, bench_cpu_seconds=down.cpu_seconds,
                   ok=identical, note="httpx, hashed, written to a file without fsync"
                   if identical else "DIFFERS from what was sent")  # fmt: skip
    return [with_server_usage(upload, up_usage), with_server_usage(download, down_usage)]


# --- The benchmark -------------------------------------------------------------------
def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    mlflow_stack = contextlib.ExitStack()
    with mlflow_stack:
        mlflow = None
        if ctx.options.compare_mlflow:
            mlflow_server.ensure_venv()
            mlflow = mlflow_stack.enter_context(
                mlflow_server.run_mlflow(ctx.workdir / "mlflow-artifacts", "sqlite")
            )
        for size in ctx.options.sizes:
            rows += run_size(ctx, size, mlflow)
    return rows


def run_size(ctx: Context, size: int, mlflow) -> list[Row]:
    chunk, keep = ctx.options.chunk_size, ctx.options.keep
    label = format_size(size)
    source = ctx.workdir / "large.bin"
    log(f"writing a {label} test file to {source}")
    digest = write_test_file(source, size)
    run_command(["sync"])
    read_through(source)
    log("baselines: cp + sync, sha256sum, hashlib")
    baselines = [
        cp_baseline(source, ctx.workdir / "large.copy", keep),
        sha256sum_baseline(source, digest),
        hashlib_baseline(source, digest),
    ]

    server = ctx.server
    with server.client() as api:
        number = declare_version(api, size, digest)
        warm_up_workers(server, number)
        sampler = UsageSampler(server.gunicorn_pid)
        sampler.take_baseline()

        log(f"uploading in {format_size(chunk)} chunks")
        with sampler.measure() as up_usage:
            upload = upload_chunks(api, number, source, size, chunk)
        pids = dict(server.pids_serving("PUT", file_url(number)))
        transfers = [upload_row(upload, size, chunk, up_usage, pids)]

        log("finalizing, waiting for ready")
        ready = finalize_and_wait(api, server, number, size)

        log("downloading")
        dest = ctx.workdir / "large.download"
        with sampler.measure() as down_usage:
            download = download_file(api, number, dest)
        transfers.append(download_row(download, size, digest, down_usage))
        if not keep:
            dest.unlink()
        if shutil.which("curl"):
            transfers.append(curl_download(server, number, size, sampler))
    if mlflow is not None:
        log("the same file through MLflow's artifact proxy")
        transfers += mlflow_transfers(mlflow, source, size, digest, ctx.workdir)
    source.unlink()
    rows = [*transfers, *baselines, ready]
    for row in rows:  # one table for every size: say which size each row is about
        if label not in row.operation:
            row.operation = f"{row.operation} {label}"
        row.details["size"] = size
    return rows
