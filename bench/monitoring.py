"""Monitoring: ingest throughput against Postgres COPY, aggregation of one window of a
million records, and the serving entrypoint's latency with and without capture.

- ingest: batches of 5,000 records with 50 features each, POSTed by 1, 2 and 4 concurrent
  senders (as one serving replica, or several, would) to /api/v1/monitoring/predictions/
  of the run's gunicorn, against `COPY ... FROM STDIN` of the same rows into the same
  (partitioned, indexed) table of the same database, measured before and after the ingest
  runs (the faster of the two is the yardstick). Bodies and COPY buffers are built before
  the clock starts, and every gunicorn worker has served a small batch (its first request
  loads the app). Goal: ingest >= 50% of COPY, judged on the best sender count.
- aggregation: 1,000,000 records of one version in one 300 s window, 50 numeric features
  against a 10-bin baseline, rolled up by `aggregation.aggregate_window` in a Django
  process on the run's database: drift on the default deterministic sample
  (MODELGATE_DRIFT_SAMPLE) and on every record. Goal: < 10 s.
- serving: the packaged serve.py of a 10-feature scikit-learn model, started twice (capture
  off, capture on to the run's registry); after 500 warm-up requests, 10,000 single-row
  /predict requests to each, taking turns (ABBA), so load on the machine hits both alike.
  p50 and p99 of both and their differences, overall and per block of 2,000 requests (the
  blocks show how much of a difference is noise). Goal: p99 overhead < 1 ms.

Register it in bench/run.py's BENCHMARKS:
    Benchmark(monitoring.NAME, "monitoring: ingest vs COPY, 1M-record aggregation, "
              "serve.py latency with and without capture", monitoring.run)
Or run it alone: `.venv/bin/python -m bench.monitoring [ingest aggregation serving]`
(database modelgate_bench_mon, Redis db 12).
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import psycopg

from .core import BenchError, Context, Row
from .server import BIN, GUNICORN_ARGS, PG_DSN, ROOT, free_port, manage, server_env

NAME = "monitoring"
FEATURES = 50
BATCH = 5000
INGEST_RECORDS = 100_000
CLIENTS = 4  # warm-up
SENDERS = (1, 2, 4)
WORKERS = int(GUNICORN_ARGS[GUNICORN_ARGS.index("--workers") + 1])
AGG_RECORDS = 1_000_000
SERVE_REQUESTS = 10_000
SERVE_WARMUP = 500
SERVE_BLOCK = 2000
SERVE_FEATURES = 10

SETUP = """
import json
from django.contrib.auth.models import User
from registry.models import ModelVersion, RegisteredModel
from registry.services.tokens import create_token
user = User.objects.get(username="bench")
model = RegisteredModel.objects.get(name="bench-monitoring")
edges = [-2 + 0.4 * i for i in range(11)]
profile = {{"type": "numeric", "count": 10000, "missing": 0, "mean": 0.0, "std": 1.15,
            "min": -2.0, "max": 2.0, "bins": {{"edges": edges, "counts": [1000] * 10}}}}
baseline = {{"columns": [f"f{{i}}" for i in range({features})],
             "features": {{f"f{{i}}": profile for i in range({features})}}}}
ModelVersion.objects.filter(model=model, number=1).update(baseline=baseline)
print(json.dumps({{"model_id": model.pk,
                  "token": create_token(user, "bench-ingest", ["ingest"], model=model.name)[1]}}))
"""

AGGREGATE = """
import json, time
from datetime import datetime
from django.conf import settings
from registry.models import ModelVersion
from registry.services.monitoring import aggregation
version = ModelVersion.objects.get(model__name="bench-monitoring", number=1)
start = datetime.fromisoformat({start!r})
found = {{}}
for sample in (settings.MODELGATE_DRIFT_SAMPLE, 0):  # the default sample, then every record
    settings.MODELGATE_DRIFT_SAMPLE = sample
    began = time.perf_counter()
    window = aggregation.aggregate_window(version, "bench", start)
    found[sample] = {{"seconds": time.perf_counter() - began, "requests": window.requests,
                     "features": len(window.drift), "n": window.drift["f0"]["n"],
                     "max_psi": max(d["psi"] for d in window.drift.values())}}
print(json.dumps(found))
"""

# 1M rows of 50 random features in one window, generated inside Postgres.
GENERATE = """
INSERT INTO registry_predictionrecord (model_id, version_number, environment, request_id, at,
    inputs, outputs, latency_ms, error, received_at)
SELECT %(model)s, 1, 'bench', 'agg-' || g, %(start)s::timestamptz + (g %% 290) * interval '1 s',
    (SELECT jsonb_object_agg('f' || i, round((random() * 4 - 2)::numeric, 4))
       FROM generate_series(0, {last}) AS i WHERE g > 0),
    jsonb_build_object('prediction', g %% 2), random() * 10, '', now()
FROM generate_series(1, %(rows)s) AS g
"""


def _rows(count: int, prefix: str, at: datetime) -> list[dict]:
    rng = np.random.default_rng(0)
    values = rng.uniform(-2, 2, size=(count, FEATURES)).round(4)
    stamp = at.isoformat().replace("+00:00", "Z")
    return [
        {
            "version": 1,
            "environment": "bench",
            "request_id": f"{prefix}-{i}",
            "at": stamp,
            "inputs": {f"f{j}": float(v) for j, v in enumerate(row)},
            "outputs": {"prediction": i % 2},
            "latency_ms": 1.0,
        }
        for i, row in enumerate(values)
    ]


def _copy_buffer(records: list[dict], model_id: int) -> io.StringIO:
    """The same rows in COPY's text format (JSON has no tabs, backslashes or newlines)."""
    out = io.StringIO()
    for r in records:
        inputs = json.dumps(r["inputs"], separators=(",", ":"))
        outputs = json.dumps(r["outputs"], separators=(",", ":"))
        out.write(
            f"{model_id}\t1\tbench\tcopy-{r['request_id']}\t{r['at']}\t{inputs}\t{outputs}"
            f"\t{r['latency_ms']}\t\t{r['at']}\n"
        )
    out.seek(0)
    return out


def _ingest(ctx: Context, token: str, model_id: int) -> list[Row]:
    at = datetime.now(UTC).replace(microsecond=0)
    url = f"{ctx.server.base_url}/api/v1/monitoring/predictions/"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def post(body: bytes) -> int:
        response = httpx.post(url, content=body, headers=headers, timeout=600)
        if response.status_code != 202:
            raise BenchError(f"ingest → {response.status_code}: {response.text[:300]}")
        return response.json()["accepted"]

    # Warm-up, untimed: a gunicorn worker's first request imports the URL conf and with it
    # most of the app (about a second of CPU), and the first batch of a day creates its
    # partition. A running server has done both; the goal is about throughput.
    path = "/api/v1/monitoring/predictions/"
    warm = [json.dumps({"records": _rows(10, f"warm{k}", at)}).encode() for k in range(8)]
    for _ in range(10):
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(post, warm))
        if len(ctx.server.pids_serving("POST", path)) >= WORKERS:
            break
    warmed = len(ctx.server.pids_serving("POST", path))

    dsn = PG_DSN.replace("dbname=postgres", f"dbname={ctx.server.database}")

    def copy(prefix: str) -> float:
        buffer = _copy_buffer(_rows(INGEST_RECORDS, prefix, at), model_id)
        conn = psycopg.connect(dsn)
        try:
            with conn.cursor() as cursor:
                began = time.perf_counter()
                with cursor.copy(
                    "COPY registry_predictionrecord (model_id, version_number, environment, "
                    "request_id, at, inputs, outputs, latency_ms, error, received_at) FROM STDIN"
                ) as copy:
                    copy.write(buffer.getvalue())
                conn.commit()
                return time.perf_counter() - began
        finally:
            conn.close()

    copy_seconds = [copy("before")]
    runs = []
    for senders in SENDERS:
        records = _rows(INGEST_RECORDS, f"ingest{senders}", at)
        bodies = [
            json.dumps({"records": records[i : i + BATCH]}).encode()
            for i in range(0, len(records), BATCH)
        ]
        del records
        began = time.perf_counter()
        with ThreadPoolExecutor(senders) as pool:
            accepted = sum(pool.map(post, bodies))
        runs.append((senders, accepted, time.perf_counter() - began, sum(map(len, bodies))))
    copy_seconds.append(copy("after"))
    copy_rate = INGEST_RECORDS / min(copy_seconds)
    best = max(accepted / seconds for _, accepted, seconds, _ in runs)
    rows = []
    for senders, accepted, seconds, nbytes in runs:
        rate = accepted / seconds
        ratio = rate / copy_rate
        rows.append(
            Row(
                NAME,
                f"ingest {INGEST_RECORDS:,} records x {FEATURES} features "
                f"({senders} sender{'s' if senders > 1 else ''})",
                seconds=seconds,
                nbytes=nbytes,
                ok=accepted == INGEST_RECORDS and (rate < best or ratio >= 0.5),
                note=f"{rate:,.0f} records/s = {ratio:.0%} of COPY"
                + (" (the best: goal >= 50%)" if rate == best else ""),
                details={
                    "records_per_s": rate,
                    "ratio_to_copy": ratio,
                    "senders": senders,
                    "batch": BATCH,
                    "workers_warmed": warmed,
                },
            )
        )
    rows.append(
        Row(
            NAME,
            f"Postgres COPY of the same {INGEST_RECORDS:,} rows (faster of before/after)",
            seconds=min(copy_seconds),
            note=f"{copy_rate:,.0f} records/s",
            details={"records_per_s": copy_rate, "seconds_before_after": copy_seconds},
        )
    )
    return rows


def _aggregation(ctx: Context, model_id: int) -> list[Row]:
    env = server_env(ctx.server.root, ctx.server.database)
    length = 300
    start = datetime.fromtimestamp(
        (int(time.time()) // length - 2) * length, UTC
    )  # a complete window, today or yesterday: its partition exists or is made here
    manage(env, "shell", "-c", f"from registry.services.monitoring import partitions; "
           f"import datetime; partitions.ensure([datetime.date.fromisoformat("
           f"{start.date().isoformat()!r})])")  # fmt: skip
    conn = psycopg.connect(PG_DSN.replace("dbname=postgres", f"dbname={ctx.server.database}"))
    try:
        with conn.cursor() as cursor:
            began = time.perf_counter()
            cursor.execute(
                GENERATE.format(last=FEATURES - 1),
                {"model": model_id, "start": start, "rows": AGG_RECORDS},
            )
            cursor.execute("ANALYZE registry_predictionrecord")
            conn.commit()
            generated = time.perf_counter() - began
    finally:
        conn.close()
    out = manage(env, "shell", "-c", AGGREGATE.format(start=start.isoformat()))
    rows = []
    for sample, result in json.loads(out.strip().splitlines()[-1]).items():
        drift = f"drift on a {int(sample):,}-record sample" if int(sample) else "drift on all"
        rows.append(
            Row(
                NAME,
                f"aggregate one window of {AGG_RECORDS:,} records x {FEATURES} features ({drift})",
                seconds=result["seconds"],
                # The goal is for the default (sampled) drift; drift on every record is
                # shown for comparison and only has to count every record.
                ok=result["requests"] == AGG_RECORDS
                and (not int(sample) or result["seconds"] < 10),
                note=("goal < 10 s; " if int(sample) else "for comparison (no goal); ")
                + f"PSI + chi-squared per feature, latency p50/p95/p99; "
                f"max PSI {result['max_psi']:.4f}",
                details={**result, "generate_seconds": generated},
            )
        )
    return rows


def _package(workdir: Path) -> Path:
    import hashlib

    import joblib
    from sklearn.linear_model import LogisticRegression

    sys.path.insert(0, str(ROOT))
    from registry.packaging import FileRef, build_package

    rng = np.random.default_rng(0)
    features = rng.normal(size=(500, SERVE_FEATURES))
    model = LogisticRegression().fit(features, (features[:, 0] > 0).astype(int))
    data = io.BytesIO()
    joblib.dump(model, data)
    blob = data.getvalue()
    meta = {"model": "bench-monitoring", "version": 1, "framework": "sklearn", "requirements": []}
    out = io.BytesIO()
    ref = FileRef("model.joblib", len(blob), hashlib.sha256(blob).hexdigest())
    build_package(meta, [ref], lambda _: io.BytesIO(blob), out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        tar.extractall(workdir / "package", filter="data")
    return workdir / "package" / "bench-monitoring-1"


def _start_serving(folder: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = (folder.parent / f"serve-{port}.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "python"), str(folder / "serve.py"), "--host", "127.0.0.1"],
        env={**os.environ, "PORT": str(port), **env},
        stderr=log,
    )
    log.close()  # the child keeps its own descriptor
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{url}/health", timeout=2)
            return proc, url
        except httpx.TransportError as exc:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise BenchError("serve.py did not start") from exc
            time.sleep(0.1)


def _latencies(urls: list[str]) -> list[list[float]]:
    """Client-side latency (ms) of the same requests to each server, taking turns (ABBA),
    so that a busy moment of the machine falls on both alike."""
    rng = np.random.default_rng(1)
    bodies = [
        json.dumps({"instances": [rng.normal(size=SERVE_FEATURES).round(4).tolist()]})
        for _ in range(SERVE_REQUESTS + SERVE_WARMUP)
    ]
    took: list[list[float]] = [[] for _ in urls]
    clients = [httpx.Client(base_url=url, timeout=30) for url in urls]
    headers = {"Content-Type": "application/json"}
    try:
        for index, body in enumerate(bodies):
            order = range(len(urls)) if index % 2 else reversed(range(len(urls)))
            for which in order:
                began = time.perf_counter()
                response = clients[which].post("/predict", content=body, headers=headers)
                elapsed = time.perf_counter() - began
                if response.status_code != 200:
                    raise BenchError(f"/predict → {response.status_code}: {response.text[:200]}")
                if index >= SERVE_WARMUP:  # the first ones warm up model and connection
                    took[which].append(elapsed * 1000)
    finally:
        for client in clients:
            client.close()
    return took


def _serving(ctx: Context, token: str) -> list[Row]:
    folder = _package(ctx.workdir)
    capture = {
        "MODELGATE_URL": ctx.server.base_url,
        "MODELGATE_INGEST_TOKEN": token,
        "MODELGATE_ENVIRONMENT": "bench",
        "MODELGATE_SPOOL_DIR": str(ctx.workdir / "spool"),
    }
    started = []
    try:
        for env in ({}, capture):
            started.append(_start_serving(folder, env))
        plain, captured = _latencies([url for _, url in started])
    finally:
        for proc, _ in started:
            proc.terminate()
            proc.wait(timeout=30)

    def p(values: list[float], q: float) -> float:
        return float(np.percentile(values, q))

    overhead = {q: p(captured, q) - p(plain, q) for q in (50, 99)}
    blocks = [
        p(captured[i : i + SERVE_BLOCK], 99) - p(plain[i : i + SERVE_BLOCK], 99)
        for i in range(0, len(plain), SERVE_BLOCK)
    ]
    rows = []
    for label, values in (("without capture", plain), ("with capture", captured)):
        rows.append(
            Row(
                NAME,
                f"serve.py /predict {label} ({SERVE_REQUESTS} requests, taking turns)",
                seconds=sum(values) / 1000,
                note=f"p50 {p(values, 50):.2f} ms, p99 {p(values, 99):.2f} ms",
                details={"p50_ms": p(values, 50), "p99_ms": p(values, 99),
                         "mean_ms": statistics.fmean(values)},
            )
        )  # fmt: skip
    rows[-1].ok = overhead[99] < 1.0
    rows[-1].note += (
        f"; overhead p50 {overhead[50]:+.2f} ms, p99 {overhead[99]:+.2f} ms (goal < 1 ms); "
        f"p99 overhead per {SERVE_BLOCK} requests {min(blocks):+.2f}..{max(blocks):+.2f} ms"
    )
    rows[-1].details.update(
        p50_overhead_ms=overhead[50],
        p99_overhead_ms=overhead[99],
        p99_overhead_ms_per_block=blocks,
    )
    return rows


PARTS = ("ingest", "aggregation", "serving")


def run(ctx: Context, parts: tuple[str, ...] = PARTS) -> list[Row]:
    server = ctx.server
    client = server.client()
    client.post("/api/v1/models/", json={"name": "bench-monitoring"}).raise_for_status()
    client.post(
        "/api/v1/models/bench-monitoring/versions/",
        data={"metadata": "{}"},
        files=[("files", ("model.txt", b"weights", "text/plain"))],
    ).raise_for_status()
    env = server_env(server.root, server.database)
    setup = json.loads(
        manage(env, "shell", "-c", SETUP.format(features=FEATURES)).strip().splitlines()[-1]
    )
    rows = []
    if "ingest" in parts:
        rows += _ingest(ctx, setup["token"], setup["model_id"])
    if "aggregation" in parts:
        rows += _aggregation(ctx, setup["model_id"])
    if "serving" in parts:
        rows += _serving(ctx, setup["token"])
    return rows


if __name__ == "__main__":  # this benchmark alone: python -m bench.monitoring [PART ...]
    import tempfile

    from .core import Options
    from .server import run_server

    chosen = tuple(sys.argv[1:]) or PARTS
    with tempfile.TemporaryDirectory(dir=ROOT / "var") as scratch:
        options = Options(sizes=(), chunk_size=0, keep=False)
        with Context(options, Path(scratch)) as ctx:
            ctx._server = ctx._stack.enter_context(
                run_server(Path(scratch) / "server", database="modelgate_bench_mon",
                           broker_url="redis://127.0.0.1:6379/12")
            )  # fmt: skip
            for row in run(ctx, chosen):
                print(json.dumps(row.to_json()))
