"""The scanner's throughput on real-shaped models, beside sha256sum and cat of the same file.

How it measures (size: the run's first `--size` — 1 GiB full, 64 MiB small — or
MODELGATE_BENCH_SCAN_SIZE):

1. Builds two models of that size in the run's scratch directory, streamed (at most one
   64 MiB block in memory at a time), with no torch installed:
   - a PyTorch-style zip checkpoint as `torch.save` writes it: `archive/data.pkl` (a
     protocol 2 pickle of an OrderedDict state dict whose tensors are
     `torch._utils._rebuild_tensor_v2` of persistent ids `('storage', torch.FloatStorage,
     key, 'cpu', numel)`), the raw float32 storages `archive/data/0..` (<= 64 MiB each,
     stored uncompressed, each aligned to 64 bytes as torch aligns them), `archive/byteorder`
     and `archive/version`;
   - a joblib dump (uncompressed, as scikit-learn models usually are) of a scikit-learn
     `MLPRegressor` whose `coefs_` are 8 float64 layers, memory-mapped from a raw file
     written block by block (so joblib streams them out in its 16 MiB pieces).
   The weights are normal floats (mean 0, sd 0.02), as trained weights are: a scanner that
   tries array bytes as pickle opcodes meets what it would meet in a real model.
2. Per file, after one warm-up read (so every contender reads from the page cache), three
   rounds, each running in turn `cat FILE > /dev/null` (the disk/page-cache bound),
   `sha256sum FILE` (the machine's limit the goal is set against) and
   `registry.scanner.scan_file(path, lambda: open(path, "rb"))` in this process; the best
   round of each is kept. MiB/s = file size / wall time. The scan's row carries its CPU
   seconds and this process's RSS growth during the scan (sampled every 50 ms).
   Goal: the scan takes < 2x the time of sha256sum (ratio = scan seconds / sha256sum seconds).
3. Once more each from a cold cache: the file's pages are evicted with
   posix_fadvise(DONTNEED) before each run (this file only; the machine's cache is
   shared), and `fincore` confirms it where installed. Shown in the notes and the JSON.
4. The scan must say `clean`: these are ordinary models, and a gate that blocks them is
   not one users keep. A row per file says what it said; anything else fails the row.

MLflow has no scanner: its registry stores what it is given, so there is nothing to set
beside these rows.

Run on its own with `python -m bench.scan --size 64M`; in `make bench` it is registered in
bench/run.py as `Benchmark(scan.NAME, scan.DESCRIPTION, scan.run)`.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import pickle
import shutil
import struct
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from .core import BenchError, Context, MiB, Options, Row, format_size, parse_size
from .usage import Stopwatch

NAME = "scan"
DESCRIPTION = "scanner: MiB/s on a PyTorch zip and a joblib file vs sha256sum and cat"
ROUNDS = 3
GOAL_RATIO = 2.0  # scan seconds / sha256sum seconds
BLOCK = 64 * MiB  # the most of a model the builders hold at once; torch's storage size
ALIGNMENT = 64  # torch.save aligns each storage in the zip to 64 bytes
WEIGHT_SD = 0.02
NO_MLFLOW = "MLflow has no scanner: nothing to compare"


def log(message: str) -> None:
    print(f"  [{NAME}] {message}", file=sys.stderr, flush=True)


# --- Pickle opcodes, for a torch data.pkl without torch ---------------------------------
def _str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def _int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])  # BININT1
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)  # BININT2
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)  # BININT
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data  # LONG1


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"  # GLOBAL


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t" if items else b")"  # MARK ... TUPLE / EMPTY_TUPLE


def _ordered_dict(pairs: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(key + value for key, value in pairs)
    items = b"(" + body + b"u" if pairs else b""  # MARK ... SETITEMS
    return _global("collections", "OrderedDict") + b")R" + items  # EMPTY_TUPLE, REDUCE


def torch_data_pkl(tensors: list[tuple[str, str, int, tuple[int, ...]]]) -> bytes:
    """data.pkl of a state dict: (name, storage key, numel, shape) per float32 tensor, as
    torch.save (protocol 2) writes it, less the memo opcodes."""
    pairs = []
    for name, key, numel, shape in tensors:
        strides = tuple(math.prod(shape[i + 1 :]) for i in range(len(shape)))
        storage = (
            _tuple(
                _str("storage"),
                _global("torch", "FloatStorage"),
                _str(key),
                _str("cpu"),
                _int(numel),
            )
            + b"Q"
        )  # BINPERSID: torch's persistent_load finds the storage by key
        args = _tuple(
            storage,
            _int(0),  # storage offset
            _tuple(*map(_int, shape)),
            _tuple(*map(_int, strides)),
            b"\x89",  # requires_grad: NEWFALSE
            _ordered_dict([]),  # backward hooks
        )
        pairs.append((_str(name), _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"))
    return b"\x80\x02" + _ordered_dict(pairs) + b"."


def check_data_pkl(data: bytes, keys: dict[str, int]) -> None:
    """Load `data` with stand-ins for torch's names: the bytes are a pickle torch would read."""

    class Stub:
        def __init__(self, *args: Any) -> None:
            self.args = args

    class Loader(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            allowed = {("collections", "OrderedDict"), ("torch", "FloatStorage")}
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return Stub
            if (module, name) not in allowed:
                raise BenchError(f"data.pkl names {module}.{name}")
            return super().find_class(module, name) if module == "collections" else Stub

        def persistent_load(self, pid: Any) -> Any:
            kind, _, key, location, numel = pid
            if kind != "storage" or location != "cpu" or keys.get(key) != numel:
                raise BenchError(f"data.pkl has a bad persistent id {pid!r}")
            return key

    state = Loader(io.BytesIO(data)).load()
    if sorted(t.args[0] for t in state.values()) != sorted(keys):
        raise BenchError("data.pkl does not name every storage")


# --- The models ------------------------------------------------------------------------
def _weights(rng, count: int, dtype) -> bytes:
    """`count` normal floats (sd WEIGHT_SD) of `dtype` as bytes: one block at most."""
    import numpy as np

    values = rng.standard_normal(count, dtype=np.float32)
    values *= WEIGHT_SD
    return values.astype(dtype, copy=False).tobytes()


def _storage_shape(numel: int) -> tuple[int, ...]:
    for cols in (4096, 1024, 256, 64, 1):
        if numel % cols == 0:
            return (numel // cols, cols)
    return (numel,)


def _aligned_member(archive: zipfile.ZipFile, name: str) -> zipfile.ZipInfo:
    """A stored member whose data starts on an ALIGNMENT boundary (torch's "FB" padding)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    start = archive.start_dir + 30 + len(name.encode())  # the local header's fixed part
    pad = -(start + 4) % ALIGNMENT
    info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
    return info


def torch_zip(size: int, path: Path, seed: int = 0) -> dict[str, Any]:
    """A PyTorch-style zip checkpoint with `size` bytes of float32 storages, streamed."""
    import numpy as np

    rng = np.random.default_rng(seed)
    per_storage = max(4096, min(BLOCK, size // 8) // 4096 * 4096)  # >= 8 storages when small
    tensors, left = [], size // 4 * 4
    while left:
        nbytes = min(per_storage, left)
        key, numel = str(len(tensors)), nbytes // 4
        tensors.append((f"layers.{key}.weight", key, numel, _storage_shape(numel)))
        left -= nbytes
    data_pkl = torch_data_pkl(tensors)
    check_data_pkl(data_pkl, {key: numel for _, key, numel, _ in tensors})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        archive.writestr(_aligned_member(archive, "archive/data.pkl"), data_pkl)
        archive.writestr(_aligned_member(archive, "archive/byteorder"), b"little")
        for _, key, numel, _ in tensors:
            info = _aligned_member(archive, f"archive/data/{key}")
            with archive.open(info, "w") as member:
                member.write(_weights(rng, numel, np.float32))
        archive.writestr(_aligned_member(archive, "archive/version"), b"3\n")
    return {"storages": len(tensors), "storage_bytes": per_storage, "data_pkl_bytes": len(data_pkl)}


def sklearn_joblib(size: int, path: Path, seed: int = 1) -> dict[str, Any]:
    """joblib.dump of an MLPRegressor with ~`size` bytes of float64 weights in 8 layers.

    The layers are views of a memory-mapped raw file written block by block, so neither
    building them nor dumping them holds the model in this process's memory."""
    import joblib
    import numpy as np
    from sklearn.neural_network import MLPRegressor

    layers = 8
    width = max(8, math.isqrt(size // 8 // layers))
    per_layer = width * width
    raw = path.with_suffix(".weights.raw")
    rng = np.random.default_rng(seed)
    with open(raw, "wb") as out:
        left = per_layer * layers
        while left:
            count = min(BLOCK // 8, left)
            out.write(_weights(rng, count, np.float64))
            left -= count
    try:
        weights = np.memmap(raw, dtype=np.float64, mode="r", shape=(layers, width, width))
        model = MLPRegressor(hidden_layer_sizes=(width,) * (layers - 1))
        # A fitted model's attributes, set by hand: the fit is not what is measured.
        model.coefs_ = [weights[i].view(np.ndarray) for i in range(layers)]
        model.intercepts_ = [np.zeros(width) for _ in range(layers)]
        model.n_features_in_, model.n_outputs_, model.n_layers_ = width, width, layers + 1
        model.n_iter_, model.t_, model.loss_ = 200, 200 * 10_000, 0.0123
        model.out_activation_ = "identity"
        joblib.dump(model, path)
        del model, weights
    finally:
        raw.unlink(missing_ok=True)
    return {"layers": layers, "layer_shape": [width, width], "dtype": "float64"}


MODELS: list[tuple[str, str, Callable[[int, Path], dict[str, Any]]]] = [
    ("PyTorch zip", "model.pt", torch_zip),
    ("joblib", "model.joblib", sklearn_joblib),
]


# --- Timing ----------------------------------------------------------------------------
def run_command(cmd: list[str]) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr}")
    return result.stdout


def read_through(path: Path) -> None:
    with open(path, "rb") as src:
        while src.read(8 * MiB):
            pass


def evict(path: Path) -> float | None:
    """Drop `path`'s pages from the page cache (this file only); the share still resident
    afterwards per fincore, or None when fincore is not installed."""
    with open(path, "rb") as file:
        os.fsync(file.fileno())
        os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    if not shutil.which("fincore"):
        return None
    out = run_command(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)])
    return int(out.split()[0]) / path.stat().st_size


@dataclass
class Timing:
    seconds: float
    cpu_seconds: float
    result: Any = None  # sha256sum's digest, the scan's ScanResult
    rss_growth_mib: float | None = None
    resident_before: float | None = None  # cold runs: the file's share still cached
    bytes_read: int | None = None  # the scan: what its read() calls returned


def time_cat(path: Path) -> Timing:
    with open(os.devnull, "wb") as null, Stopwatch() as watch:
        done = subprocess.run(["cat", str(path)], stdout=null, check=False)
    if done.returncode != 0:
        raise BenchError(f"cat {path} failed ({done.returncode})")
    return Timing(watch.seconds, watch.cpu_seconds)


def time_sha256sum(path: Path) -> Timing:
    with Stopwatch() as watch:
        digest = run_command(["sha256sum", str(path)]).split()[0]
    return Timing(watch.seconds, watch.cpu_seconds, digest)


@contextlib.contextmanager
def own_usage() -> Iterator[dict[str, float]]:
    """This process's RSS growth (peak - before, sampled every 50 ms) and the bytes its
    read() calls returned (/proc/self/io rchar) during the block. The sampler reads only
    /proc/self/statm, so it adds a few bytes per sample to the count."""
    me = psutil.Process()
    baseline, read_before = me.memory_info().rss, me.io_counters().read_chars
    peak, stop = baseline, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.05):
            peak = max(peak, me.memory_info().rss)

    thread = threading.Thread(target=sample, name="scan-rss", daemon=True)
    thread.start()
    usage: dict[str, float] = {}
    try:
        yield usage
    finally:
        stop.set()
        thread.join()
        peak = max(peak, me.memory_info().rss)
        usage["rss_growth_mib"] = (peak - baseline) / MiB
        usage["bytes_read"] = me.io_counters().read_chars - read_before


def time_scan(path: Path) -> Timing:
    from registry.scanner import scan_file

    with own_usage() as usage, Stopwatch() as watch:
        result = scan_file(str(path), lambda: open(path, "rb"))  # noqa: SIM115 - scan closes
    return Timing(
        watch.seconds,
        watch.cpu_seconds,
        result,
        rss_growth_mib=usage["rss_growth_mib"],
        bytes_read=usage["bytes_read"],
    )


TOOLS: dict[str, Callable[[Path], Timing]] = {
    "cat": time_cat,
    "sha256sum": time_sha256sum,
    "scan": time_scan,
}


def measure(path: Path) -> tuple[dict[str, Timing], dict[str, Timing], dict[str, list[float]]]:
    """(best warm run, cold run, every warm run's seconds) per tool, rounds interleaved."""
    read_through(path)
    runs: dict[str, list[Timing]] = {tool: [] for tool in TOOLS}
    for _ in range(ROUNDS):
        for tool, timed in TOOLS.items():
            runs[tool].append(timed(path))
    best = {tool: min(timings, key=lambda t: t.seconds) for tool, timings in runs.items()}
    cold = {}
    for tool, timed in TOOLS.items():
        resident = evict(path)
        cold[tool] = timed(path)
        cold[tool].resident_before = resident
    seconds = {tool: [round(t.seconds, 3) for t in timings] for tool, timings in runs.items()}
    return best, cold, seconds


# --- Rows ------------------------------------------------------------------------------
def _rate(nbytes: int, seconds: float) -> str:
    return f"{nbytes / MiB / seconds:.0f} MiB/s"


def _share(part: int | None, whole: int) -> str:
    if part is None:
        return "?"
    return f"{part / MiB:.2f} MiB ({part / whole:.1%})"


def _cold_note(nbytes: int, timing: Timing) -> str:
    resident = timing.resident_before
    shown = "" if resident is None else f", {resident:.0%} resident"
    return f"cold {_rate(nbytes, timing.seconds)}{shown}"


def model_rows(kind: str, path: Path, built: dict[str, Any], nominal: int) -> list[Row]:
    size = path.stat().st_size  # a little over `nominal`: headers, pickles, zip records
    label = f"{kind} {format_size(nominal)}"
    best, cold, seconds = measure(path)
    scan, sha = best["scan"], best["sha256sum"]
    ratio = scan.seconds / sha.seconds
    cold_ratio = cold["scan"].seconds / cold["sha256sum"].seconds
    result = scan.result
    common = {"file": path.name, "size": size, "built": built, "rounds": ROUNDS}

    def row(tool: str, operation: str, note: str, **extra: Any) -> Row:
        timing = best[tool]
        return Row(
            NAME,
            operation,
            seconds=timing.seconds,
            nbytes=size,
            bench_cpu_seconds=timing.cpu_seconds,
            note=f"best of {ROUNDS}, warm; {_cold_note(size, cold[tool])}; {note}",
            details={
                **common,
                "seconds_per_round": seconds[tool],
                "cold_seconds": cold[tool].seconds,
                "cold_resident_before": cold[tool].resident_before,
                **extra,
            },
        )

    scan_row = row(
        "scan",
        f"scan_file, {label}",
        f"{ratio:.2f}x sha256sum's time (cold {cold_ratio:.2f}x), goal < {GOAL_RATIO:g}x; "
        f"its reads returned {_share(scan.bytes_read, size)} of the file; RSS growth: this "
        f"process's during the scan; {NO_MLFLOW}",
        ratio_to_sha256sum=ratio,
        cold_ratio_to_sha256sum=cold_ratio,
        goal_ratio=GOAL_RATIO,
        status=result.status,
        bytes_read=scan.bytes_read,
        cold_bytes_read=cold["scan"].bytes_read,
    )
    scan_row.ok = ratio < GOAL_RATIO
    scan_row.rss_growth_max_mib = scan.rss_growth_mib
    statuses = {"warm": result.status, "cold": cold["scan"].result.status}
    formats = sorted({kind for verdict in result.files.values() for kind in verdict["formats"]})
    verdict = Row(
        NAME,
        f"scan verdict, {label}",
        ok=set(statuses.values()) == {"clean"},
        note=f"status {result.status!r} (must be 'clean': a real model); "
        f"{len(result.findings)} finding(s); recognised: {', '.join(formats) or 'nothing'}",
        details={
            **common,
            "statuses": statuses,
            "findings": [finding.as_dict() for finding in result.findings[:20]],
            "formats": formats,
        },
    )
    return [
        scan_row,
        row("sha256sum", f"sha256sum (the goal's baseline), {label}", "coreutils",
            digest=sha.result),
        row("cat", f"cat > /dev/null (disk bound), {label}", "reads the file, nothing else"),
        verdict,
    ]  # fmt: skip


def run(ctx: Context) -> list[Row]:
    override = os.environ.get("MODELGATE_BENCH_SCAN_SIZE")
    size = parse_size(override) if override else ctx.options.sizes[0]
    workdir = ctx.workdir / "scan"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    rows: list[Row] = []
    try:
        for kind, filename, build in MODELS:
            path = workdir / filename
            log(f"building a {format_size(size)} {kind} model")
            started = time.perf_counter()
            built = build(size, path)
            built["build_seconds"] = round(time.perf_counter() - started, 1)
            log(f"timing scan_file, sha256sum and cat on {path.name} ({path.stat().st_size} B)")
            rows += model_rows(kind, path, built, size)
            if not ctx.options.keep:
                path.unlink()
        return rows
    finally:
        if not ctx.options.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="64M")
    args = parser.parse_args()
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as scratch:
        ctx = Context(Options(sizes=(size,), chunk_size=64 * MiB, keep=False), Path(scratch))
        print(f"scan benchmark, {format_size(size)}")
        for row in run(ctx):
            rate = f"{row.mib_per_s:8.1f} MiB/s" if row.mib_per_s else " " * 13
            flag = "" if row.ok else "  [goal missed]"
            secs = f"{row.seconds:8.3f} s" if row.seconds else " " * 10
            print(f"{row.operation:<52} {secs} {rate}  {row.note}{flag}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
