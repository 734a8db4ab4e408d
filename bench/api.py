"""Registry API operations, Modelgate beside the MLflow tracking server, same workload.

For each operation, at concurrency 1 and 8, over keep-alive connections and with a fresh
TCP connection per request (`Connection: close`), the client runs requests for a fixed
time and records every latency: ops/s = requests / wall time, p50/p99 of the latencies.
Client threads use `http.client` (cheap per request, so the client is not the bottleneck
on a shared 2-core machine) and check every status code.

Data: `--models` models x `--versions` versions each (default 100 x 100 = 10,000), seeded
in bulk in each system's database (bench/seed.py, bench/mlflow_server.py), tagged
`team: t<n % 10>`, with alias `champion` → 1 and (Modelgate only: MLflow versions have
no metrics) metric `accuracy`. Then Modelgate alone is seeded up to `--big-versions`
(default 1,000,000, 10,000 per model) and the reads run again.

MLflow runs twice: SQLite backend store, then Postgres (`mlflow_bench`).
"""

from __future__ import annotations

import http.client
import itertools
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

import httpx

from . import mlflow_server, seed
from .core import BenchError, Context, Row

NAME = "api"
CONCURRENCY = (1, 8)
MODES = ("keep-alive", "fresh")
MODELGATE = "modelgate"


def log(message: str) -> None:
    print(f"  [{NAME}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Op:
    """An operation: `request(i)` gives (method, path, JSON body) for the i-th call."""

    name: str
    request: Callable[[int], tuple[str, str, dict | None]]
    expect: int = 200
    reads: bool = True  # read-only: measured again at 1,000,000 versions


def _model(i: int, models: int) -> str:
    return f"m-{i % models:04d}"


def modelgate_ops(models: int, per_model: int, tag: str) -> list[Op]:
    def versions(i: int, query: str = "") -> str:
        return f"/api/v1/models/{_model(i, models)}/versions/{query}"

    files = [{"path": "model.bin", "size": 1, "sha256": "0" * 64}]
    return [
        Op("create model", lambda i: ("POST", "/api/v1/models/", {"name": f"{tag}-{i}"}), 201,
           reads=False),
        Op("create version (metadata)",
           lambda i: ("POST", f"/api/v1/models/{tag}-cv/versions/", {"files": files}), 201,
           reads=False),
        Op("resolve alias → version", lambda i: ("GET", versions(i, "@champion/"), None)),
        Op("get version", lambda i: ("GET", versions(i, f"{1 + i * 37 % per_model}/"), None)),
        Op("list versions (first page)", lambda i: ("GET", versions(i, "?page_size=50"), None)),
        Op("search versions by tag",
           lambda i: ("GET", versions(i, f"?tag=team:t{i % 10}&page_size=50"), None)),
        Op("search versions by metric",
           lambda i: ("GET", versions(i, f"?metric={quote('accuracy>=0.99')}&page_size=50"),
                      None)),
    ]  # fmt: skip


def mlflow_ops(models: int, per_model: int, tag: str) -> list[Op]:
    api = "/api/2.0/mlflow"

    def search(i: int, extra: str = "") -> str:
        query = urlencode({"filter": f"name='{_model(i, models)}'{extra}", "max_results": 50})
        return f"{api}/model-versions/search?{query}"

    def get(i: int) -> str:
        query = urlencode({"name": _model(i, models), "version": 1 + i * 37 % per_model})
        return f"{api}/model-versions/get?{query}"

    def alias(i: int) -> str:
        query = urlencode({"name": _model(i, models), "alias": "champion"})
        return f"{api}/registered-models/alias?{query}"

    version = {"name": f"{tag}-cv", "source": "s3://bench-bucket/model"}
    return [
        Op("create model",
           lambda i: ("POST", f"{api}/registered-models/create", {"name": f"{tag}-{i}"}),
           reads=False),
        Op("create version (metadata)",
           lambda i: ("POST", f"{api}/model-versions/create", version), reads=False),
        Op("resolve alias → version", lambda i: ("GET", alias(i), None)),
        Op("get version", lambda i: ("GET", get(i), None)),
        Op("list versions (first page)", lambda i: ("GET", search(i), None)),
        Op("search versions by tag",
           lambda i: ("GET", search(i, f" and tags.team='t{i % 10}'"), None)),
        # MLflow model versions carry no metrics (they live on runs): nothing to compare.
    ]  # fmt: skip


@dataclass
class Stats:
    requests: int
    seconds: float
    latencies: list[float]
    errors: list[str]

    @property
    def ops_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def quantile_ms(self, q: int) -> float:
        if len(self.latencies) < 2:
            return (self.latencies or [0.0])[0] * 1000
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[q - 1] * 1000


def measure(
    base_url: str,
    headers: dict[str, str],
    op: Op,
    concurrency: int,
    keep_alive: bool,
    seconds: float,
    max_requests: int,
    start: int = 0,
) -> Stats:
    """Run `op` from `concurrency` threads for `seconds` (or `max_requests`)."""
    url = urlsplit(base_url)
    counter = itertools.count(start)
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    sent = [0]
    base_headers = {**headers, "Content-Type": "application/json"}
    if not keep_alive:
        base_headers["Connection"] = "close"
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        conn: http.client.HTTPConnection | None = None
        mine: list[float] = []
        while time.perf_counter() < deadline:
            with lock:
                if sent[0] >= max_requests:
                    break
                sent[0] += 1
                i = next(counter)
            method, path, body = op.request(i)
            payload = json.dumps(body).encode() if body is not None else None
            began = time.perf_counter()
            if conn is None:
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
            try:
                conn.request(method, path, body=payload, headers=base_headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = None
                errors.append(f"{method} {path}: {exc!r}")
                continue
            mine.append(time.perf_counter() - began)
            if response.status != op.expect:
                errors.append(f"{method} {path} → {response.status}: {data[:300]!r}")
            if not keep_alive or response.will_close:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Stats(len(latencies), time.perf_counter() - began, latencies, errors)


def run_ops(
    system: str,
    base_url: str,
    headers: dict[str, str],
    ops: list[Op],
    ctx: Context,
    scale: str,
) -> list[Row]:
    rows = []
    seconds, max_requests = ctx.options.api_seconds, ctx.options.api_max_requests
    offset = 0
    for op in ops:
        # A short unmeasured warm-up: imports, caches, connection pools of the server.
        measure(base_url, headers, op, 2, True, 0.5, 40, start=offset)
        offset += 1000
        failed = False
        for concurrency in CONCURRENCY:
            if failed:
                break
            for mode in MODES:
                stats = measure(
                    base_url, headers, op, concurrency, mode == "keep-alive",
                    seconds, max_requests, start=offset,
                )  # fmt: skip
                offset += max_requests + 1
                row = api_row(system, op.name, scale, concurrency, mode, stats)
                rows.append(row)
                if stats.errors:
                    # Kept as a failed row: the other operations still get measured.
                    row.ok = False
                    row.note = f"{len(stats.errors)} failed request(s): {stats.errors[0]}"
                    log(f"{system} {op.name}: {row.note}")
                    failed = True
                    break
                log(
                    f"{system:16} {op.name:28} {scale:>9} c={concurrency} {mode:10} "
                    f"{stats.ops_s:8.1f} ops/s p50 {stats.quantile_ms(50):6.1f} ms "
                    f"p99 {stats.quantile_ms(99):6.1f} ms"
                )
    return rows


def api_row(system: str, op: str, scale: str, concurrency: int, mode: str, stats: Stats) -> Row:
    return Row(
        NAME,
        op,
        seconds=stats.seconds,
        details={
            "system": system,
            "scale": scale,
            "concurrency": concurrency,
            "connection": mode,
            "requests": stats.requests,
            "ops_s": round(stats.ops_s, 1),
            "p50_ms": round(stats.quantile_ms(50), 2),
            "p99_ms": round(stats.quantile_ms(99), 2),
        },
    )


def _scale(total: int) -> str:
    return f"{total:,} v"


def run(ctx: Context) -> list[Row]:
    opts = ctx.options
    models, per_model = opts.api_models, opts.api_versions
    server = ctx.server
    headers = {"Authorization": f"Bearer {server.token}"}
    log(f"seeding Modelgate: {models} models x {per_model} versions (COPY)")
    seed.seed(server.database, models, per_model)
    # Version creation needs a model of its own for each (mode, concurrency) pass: names
    # carry the run's tag, so creates never collide with seeded data.
    tag = f"b{int(time.time())}"
    with server.client(timeout=30) as api:
        api.post("/api/v1/models/", json={"name": f"{tag}-cv"}).raise_for_status()
    small = _scale(models * per_model)
    rows = run_ops(MODELGATE, server.base_url, headers, modelgate_ops(models, per_model, tag),
                   ctx, small)  # fmt: skip

    if opts.compare_mlflow:
        version = mlflow_server.ensure_venv()
        for backend in opts.mlflow_backends:
            try:
                rows += run_mlflow_pass(ctx, backend, version, models, per_model, tag, small)
            except (BenchError, httpx.HTTPError) as exc:
                # One peer failing to start must not cost the other numbers of the run.
                log(f"mlflow-{backend}: {exc}")
                rows.append(Row(NAME, f"mlflow-{backend}", ok=False, note=str(exc)[:300]))

    big_per_model = opts.api_big_versions // models
    if big_per_model > per_model:
        log(f"seeding Modelgate up to {models} x {big_per_model} versions (COPY)")
        started = time.perf_counter()
        seed.seed(server.database, models, big_per_model, first_model=models)
        log(f"seeded in {time.perf_counter() - started:.0f}s")
        big_ops = [op for op in modelgate_ops(models, big_per_model, tag) if op.reads]
        shifted = [Op(o.name, _big(o, models, big_per_model, tag), o.expect) for o in big_ops]
        rows += run_ops(MODELGATE, server.base_url, headers, shifted, ctx,
                        _scale(models * (per_model + big_per_model)))  # fmt: skip
    return rows


def run_mlflow_pass(
    ctx: Context, backend: str, version: str, models: int, per_model: int, tag: str, scale: str
) -> list[Row]:
    root = ctx.workdir / f"mlflow-{backend}"
    with mlflow_server.run_mlflow(root, backend, keep=ctx.options.keep) as mlflow:
        log(f"seeding {mlflow.label} ({version}): {models} x {per_model} via its store")
        mlflow_server.seed(mlflow, models, per_model)
        create = f"{mlflow.base_url}/api/2.0/mlflow/registered-models/create"
        httpx.post(create, json={"name": f"{tag}-cv"}, timeout=30).raise_for_status()
        ops = mlflow_ops(models, per_model, tag)
        rows = run_ops(mlflow.label, mlflow.base_url, {}, ops, ctx, scale)
    for row in rows:
        row.details["mlflow_version"] = version
    return rows


def _big(op: Op, models: int, per_model: int, tag: str) -> Callable:
    """The same request aimed at the big models m-<models> … m-<2 models - 1>."""

    def request(i: int) -> tuple[str, str, dict | None]:
        method, path, body = op.request(i)
        small = _model(i, models)
        big = f"m-{models + i % models:04d}"
        return method, path.replace(f"/models/{small}/", f"/models/{big}/", 1), body

    return request
