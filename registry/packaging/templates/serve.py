"""Serve the model packaged next to this file: GET /health and POST /predict, JSON in and out.

Standard library only, plus the model's framework (scikit-learn, with skops for a .skops
file, or onnxruntime), and prometheus_client for GET /metrics when it is installed. Run it with
`python serve.py [--host HOST] [--port PORT]`; HOST and PORT env vars set the defaults.

Before loading, model/ must hold exactly the files manifest.json lists, each with its size
and sha256, and the file to load must have the scan verdict "clean": anything else stops
serve.py with a non-zero exit before any file is unpickled. A .skops file is preferred over a
pickle, and loads only if skops trusts every type in it.

Capture: with MODELGATE_URL and MODELGATE_INGEST_TOKEN set, every prediction (or the share
MODELGATE_CAPTURE_RATE) is sent to the registry's /api/v1/monitoring/predictions/ by a
background thread, through a bounded on-disk spool that keeps records while the registry is
unreachable. Other settings: MODELGATE_ENVIRONMENT, MODELGATE_SPOOL_DIR,
MODELGATE_SPOOL_MAX_RECORDS, MODELGATE_CAPTURE_BATCH, MODELGATE_CAPTURE_INTERVAL (seconds),
MODELGATE_CAPTURE_RETRY_MAX (seconds).

Serving: a fixed pool of MODELGATE_SERVE_THREADS worker threads (default 8) answers the
connections, one request each (HTTP/1.0). Beyond them, up to MODELGATE_SERVE_BACKLOG accepted
connections (default 64) wait in memory, and as many again in the kernel's listen backlog; past
both, the kernel stops completing new connections and clients retry. Nothing is refused with a
503: a request waits for a worker. Each request must arrive whole (headers and body) within
MODELGATE_SERVE_TIMEOUT seconds (default 30) of a worker taking it, or its connection is closed:
a client that sends nothing, or a byte at a time, cannot hold a worker longer than that.

SIGTERM or SIGINT drains: the server stops accepting (connections the kernel already completed
are still served), finishes every request in flight, then the capture thread sends what it holds,
or leaves it in the spool for the next start. It exits 0, or 1 if requests were still unfinished
after MODELGATE_SERVE_DRAIN_SECONDS (default 25, under Kubernetes' 30 s grace) from the signal.
"""

import argparse
import collections
import hashlib
import io
import json
import math
import os
import pickle
import queue
import random
import re
import signal
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

try:
    import prometheus_client
except ImportError:  # /metrics then answers 501; serving works the same
    prometheus_client = None

HERE = Path(__file__).resolve().parent
MODEL_DIR = HERE / "model"
MANIFEST = json.loads((HERE / "manifest.json").read_text("utf-8"))
IDENTITY = {"model": MANIFEST["model"], "version": MANIFEST["version"]}
MAX_BODY = 16 * 1024 * 1024
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
# onnxruntime names types "tensor(int64)"; these three differ from numpy's names.
ONNX_TO_NUMPY = {"float": "float32", "double": "float64", "string": "object"}
CHUNK = 1024 * 1024


class BadRequest(ValueError):
    """The request, not the model, is at fault: answered with 400."""


def refuse(reason):
    """Stop before loading anything: the reason on stderr, exit status 1."""
    sys.exit(f"serve.py: refusing to serve: {reason}")


def manifest_files():
    return {entry["path"]: entry for entry in MANIFEST.get("files") or []}


def check_files():
    """model/ holds exactly the manifest's files, with their sizes and sha256s: what the
    registry scanned is what gets loaded. Each file is streamed, never read whole."""
    expected, seen = manifest_files(), set()
    for path in sorted(MODEL_DIR.rglob("*")):
        name = path.relative_to(MODEL_DIR).as_posix()
        if path.is_symlink():  # it could lead to any file, past these checks
            refuse(f"model/{name} is a symbolic link")
        if path.is_dir():
            continue
        entry = expected.get(name)
        if entry is None or not path.is_file():
            refuse(f"model/{name} is not a file listed in manifest.json")
        size = path.stat().st_size
        if size != entry["size"]:
            refuse(f"model/{name} is {size} bytes, manifest.json says {entry['size']}")
        digest = hashlib.sha256()
        with path.open("rb") as file:
            while chunk := file.read(CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != entry["sha256"].lower():
            refuse(f"model/{name} does not match its sha256 in manifest.json")
        seen.add(name)
    missing = sorted(set(expected) - seen)
    if missing:
        refuse(f"model/{missing[0]}, listed in manifest.json, is missing")


def judged_clean(path):
    """Refuse the file unless the registry's scan found it clean: an "unsafe", "unverified"
    or unknown verdict is never loaded, and a pickle would run whatever code it names."""
    name = path.relative_to(MODEL_DIR).as_posix()
    verdict = manifest_files()[name].get("scan") or "unknown"
    if verdict != "clean":
        refuse(f"model/{name} has the scan verdict {verdict!r}; only 'clean' files are loaded")


def first_file(*patterns):
    found = sorted(path for pattern in patterns for path in MODEL_DIR.rglob(pattern))
    return min(found, key=lambda path: len(path.parts), default=None)


def mlflow_pickled_model():
    """The sklearn flavor's pickled_model from an MLmodel, read without needing PyYAML."""
    mlmodel = first_file("MLmodel")
    text = mlmodel.read_text("utf-8", errors="replace") if mlmodel else ""
    match = re.search(r"^\s+pickled_model:\s*(\S+)\s*$", text, re.M)
    path = match and (mlmodel.parent / match.group(1).strip("'\"")).resolve()
    return path if path and path.is_relative_to(MODEL_DIR) and path.is_file() else None


def load_skops(path):
    import skops.io

    # Only the types skops trusts by default: handing get_untrusted_types' answer back as
    # `trusted` would trust whatever the file names.
    untrusted = skops.io.get_untrusted_types(file=path)
    if untrusted:
        name = path.relative_to(MODEL_DIR).as_posix()
        refuse(f"model/{name} holds types skops does not trust: {', '.join(untrusted)}")
    return skops.io.load(path)


def load_sklearn():
    # A .skops file loads without unpickling: preferred to any pickle of the model.
    path = (
        first_file("*.skops")
        or mlflow_pickled_model()
        or first_file("*.joblib", "*.pkl", "*.pickle")
    )
    if path is None:
        sys.exit("serve.py: no .skops, .joblib, .pkl or .pickle file under model/")
    judged_clean(path)
    if path.suffix == ".skops":
        return load_skops(path)
    if path.suffix == ".joblib":
        import joblib

        return joblib.load(path)
    with path.open("rb") as file:
        return pickle.load(file)  # noqa: S301 - checked against the manifest, and scanned clean


def load_onnx():
    path = first_file("*.onnx")
    if path is None:
        sys.exit("serve.py: no .onnx file under model/")
    judged_clean(path)
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def parse_body(body):
    """(rows, columns or None) from {"instances": [[...]]} or {"inputs": {name: [...]}}."""
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None
    instances = payload.get("instances") if isinstance(payload, dict) else None
    columns = payload.get("inputs") if isinstance(payload, dict) else None
    if isinstance(instances, list) and instances:
        return instances, None
    if isinstance(columns, dict) and columns and all(isinstance(v, list) for v in columns.values()):
        if len({len(values) for values in columns.values()}) != 1:
            raise BadRequest('every column in "inputs" needs the same number of values')
        return [list(row) for row in zip(*columns.values(), strict=True)], columns
    raise BadRequest('expected {"instances": [[...], ...]} or {"inputs": {"name": [...]}}')


def predict_sklearn(model, rows, columns):
    wanted = list(getattr(model, "feature_names_in_", []))
    if columns and wanted:
        names = list(columns)
        missing = set(wanted) - set(names)
        if missing:
            raise BadRequest(f"missing features: {sorted(missing)}")
        order = [names.index(name) for name in wanted]
        rows = [[row[index] for index in order] for row in rows]
        try:  # a model fitted on a DataFrame wants one back
            import pandas

            rows = pandas.DataFrame(rows, columns=wanted)
        except ImportError:
            pass
    result = {"predictions": model.predict(rows)}
    if hasattr(model, "predict_proba"):
        result["probabilities"] = model.predict_proba(rows)
    return result


def predict_onnx(session, rows, columns):
    import numpy

    inputs = session.get_inputs()
    if columns is None and len(inputs) != 1:
        raise BadRequest(f'this model has {len(inputs)} inputs: send {{"inputs": {{name: ...}}}}')
    columns = columns or {inputs[0].name: rows}
    feed = {}
    for spec in inputs:
        if spec.name not in columns:
            raise BadRequest(f"missing input {spec.name!r}")
        kind = spec.type.removeprefix("tensor(").removesuffix(")")
        feed[spec.name] = numpy.asarray(columns[spec.name], ONNX_TO_NUMPY.get(kind, kind))
    outputs = session.run(None, feed)
    result = {"predictions": outputs[0]}
    if len(outputs) > 1:
        names = [spec.name for spec in session.get_outputs()]
        result["outputs"] = dict(zip(names, outputs, strict=True))
    return result


FRAMEWORKS = {"sklearn": (load_sklearn, predict_sklearn), "onnx": (load_onnx, predict_onnx)}


# --- metrics -------------------------------------------------------------------------


class Metrics:
    """Prometheus metrics for GET /metrics; does nothing without prometheus_client."""

    def __init__(self):
        self.registry = None
        if prometheus_client is None:
            return
        pc = prometheus_client
        self.registry = pc.CollectorRegistry()
        pc.ProcessCollector(registry=self.registry)
        self.requests = pc.Counter(
            "modelgate_serve_requests",
            "Requests answered.",
            ["path", "status"],
            registry=self.registry,
        )
        self.errors = pc.Counter(
            "modelgate_serve_errors",
            "Requests answered with a 4xx or 5xx.",
            ["path", "status"],
            registry=self.registry,
        )
        self.latency = pc.Histogram(
            "modelgate_serve_request_duration_seconds",
            "Time to answer a request.",
            ["path"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.queue = pc.Gauge(
            "modelgate_capture_queue_depth",
            "Captured records not yet accepted by the registry (in memory and spooled).",
            registry=self.registry,
        )
        self.sent = pc.Counter(
            "modelgate_capture_sent_records",
            "Captured records the registry accepted.",
            registry=self.registry,
        )
        self.dropped = pc.Counter(
            "modelgate_capture_dropped_records",
            "Captured records dropped: queue or spool full, or refused by the registry.",
            ["reason"],
            registry=self.registry,
        )
        self.busy = pc.Gauge(
            "modelgate_serve_busy_workers",
            "Worker threads handling a connection (this scrape's among them).",
            registry=self.registry,
        )
        self.waiting = pc.Gauge(
            "modelgate_serve_queued_connections",
            "Accepted connections waiting for a worker.",
            registry=self.registry,
        )
        self.timeouts = pc.Counter(
            "modelgate_serve_timeouts",
            "Connections closed because the request did not arrive in time.",
            registry=self.registry,
        )

    def watch(self, server):
        if self.registry is not None:
            self.busy.set_function(lambda: server.busy)
            self.waiting.set_function(server.connections.qsize)

    def timed_out(self):
        if self.registry is not None:
            self.timeouts.inc()

    def observe(self, path, status, seconds):
        if self.registry is None:
            return
        path = path if path in ("/predict", "/health") else "other"
        self.requests.labels(path, str(status)).inc()
        if status >= 400:
            self.errors.labels(path, str(status)).inc()
        self.latency.labels(path).observe(seconds)

    def drop(self, reason, count):
        if self.registry is not None and count:
            self.dropped.labels(reason).inc(count)

    def count_sent(self, count):
        if self.registry is not None:
            self.sent.inc(count)

    def render(self):
        """(status, content type, body) for GET /metrics."""
        if self.registry is None:
            body = b'{"error": "prometheus_client is not installed"}'
            return 501, "application/json", body
        return (
            200,
            prometheus_client.CONTENT_TYPE_LATEST,
            prometheus_client.generate_latest(self.registry),
        )


# --- capture -------------------------------------------------------------------------


def plain(value):
    """JSON the registry accepts: numpy values as Python ones, non-finite numbers as null."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


SKIP = object()


def feature_value(value):
    """A scalar feature for drift, or SKIP to leave it out (a nested tensor, say)."""
    value = plain(value)
    if isinstance(value, str):
        return value[:1000].replace("\x00", "")
    if value is None or isinstance(value, bool | int | float):
        return value
    return SKIP


def positional_names(model, width):
    """Names for the columns of {"instances": [[...]]}: the model's, the signature's, or
    their positions ("0", "1", ...), which the baseline's `columns` maps to names."""
    names = [str(n) for n in getattr(model, "feature_names_in_", [])]
    if len(names) != width:
        signature = (MANIFEST.get("signature") or {}).get("inputs") or []
        names = [str(item.get("name", "")) for item in signature if isinstance(item, dict)]
    if len(names) != width or not all(names):
        names = [str(index) for index in range(width)]
    return names


class Spool:
    """Batches on disk, oldest first, holding at most `limit` records; a full spool drops
    its oldest batches. Only the capture thread uses it."""

    def __init__(self, folder, limit):
        self.folder, self.limit = Path(folder), limit
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sizes = {}
        for path in sorted(self.folder.glob("*.jsonl")):
            self.sizes[path] = sum(1 for line in path.open("rb") if line.strip())
        self.next = 1 + max((int(p.stem) for p in self.sizes), default=0)

    @property
    def records(self):
        return sum(self.sizes.values())

    def add(self, records):
        """Append one batch; returns how many of the oldest records were dropped for it."""
        dropped = max(0, len(records) - self.limit)
        records = records[dropped:]
        excess = self.records + len(records) - self.limit
        while excess > 0 and self.sizes:
            oldest = min(self.sizes)
            if self.sizes[oldest] <= excess:
                excess -= self.sizes[oldest]
                dropped += self.sizes.pop(oldest)
                oldest.unlink(missing_ok=True)
            else:  # keep the newer part of the oldest batch
                lines = oldest.read_text("utf-8").splitlines(keepends=True)
                self._write(oldest, lines[excess:])
                self.sizes[oldest] -= excess
                dropped, excess = dropped + excess, 0
        if records:
            path = self.folder / f"{self.next:016d}.jsonl"
            self.next += 1
            self._write(path, [json.dumps(r, separators=(",", ":")) + "\n" for r in records])
            self.sizes[path] = len(records)
        return dropped

    @staticmethod
    def _write(path, lines):
        temporary = path.with_suffix(".tmp")
        temporary.write_text("".join(lines), "utf-8")
        temporary.replace(path)  # a batch appears whole or not at all

    def oldest(self):
        """The oldest batch: its file and its records, each a line of JSON text."""
        if not self.sizes:
            return None, []
        path = min(self.sizes)
        return path, [line for line in path.read_text("utf-8").splitlines() if line.strip()]

    def remove(self, path):
        self.sizes.pop(path, None)
        path.unlink(missing_ok=True)


class Capture:
    """Records predictions on the request path (an append to a deque) and ships them from
    a background thread: memory -> spool files -> POST, oldest first, retried with backoff.
    The registry ignores records it already has (same request id and time), so a batch
    re-sent after a lost answer is stored once."""

    MAX_PENDING = 10_000  # requests held in memory before the thread spools them

    def __init__(self, url, token, metrics, model):
        env = os.environ
        if not url.startswith(("http://", "https://")):
            sys.exit(f"serve.py: MODELGATE_URL must be an http(s) URL, not {url!r}")
        self.endpoint = url.rstrip("/") + "/api/v1/monitoring/predictions/"
        self.token, self.metrics, self.model = token, metrics, model
        self.environment = env.get("MODELGATE_ENVIRONMENT") or None
        self.rate = float(env.get("MODELGATE_CAPTURE_RATE", "1"))
        self.batch = max(1, int(env.get("MODELGATE_CAPTURE_BATCH", "500")))
        self.interval = float(env.get("MODELGATE_CAPTURE_INTERVAL", "1"))
        self.retry_max = float(env.get("MODELGATE_CAPTURE_RETRY_MAX", "30"))
        default_dir = Path(tempfile.gettempdir()) / (
            f"modelgate-spool-{IDENTITY['model']}-{IDENTITY['version']}"
        )
        self.spool = Spool(
            env.get("MODELGATE_SPOOL_DIR") or default_dir,
            int(env.get("MODELGATE_SPOOL_MAX_RECORDS", "100000")),
        )
        self.pending = collections.deque()
        self.lock = threading.Lock()
        # The spool is the capture thread's, but stop() spools from the main thread when that
        # thread is stuck in a POST; this lock keeps the two from writing it at once.
        self.spool_lock = threading.Lock()
        self.deadline = None  # set by stop(): the last sends must end by then
        self.wake = threading.Event()
        self.stopping = False
        self.retry_at, self.delay = 0.0, 0.0
        if metrics.registry is not None:
            metrics.queue.set_function(lambda: len(self.pending) + self.spool.records)
        self.thread = threading.Thread(target=self.run, name="modelgate-capture", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def record(self, request_id, at, body, status, answer, latency_ms):
        """Called on the request path: keep it cheap, the thread does the rest."""
        if self.rate < 1 and random.random() >= self.rate:
            return
        with self.lock:
            if len(self.pending) >= self.MAX_PENDING:
                self.pending.popleft()
                self.metrics.drop("queue_full", 1)
            self.pending.append((request_id, at, body, status, answer, latency_ms))
            full = len(self.pending) >= self.batch
        if full:
            self.wake.set()

    def run(self):
        while True:
            self.wake.wait(self.interval)
            self.wake.clear()
            if self.stopping:
                break
            self.flush()
        # Stopping: what is in memory goes to disk, then one more try (backoff or not) to send
        # it all, each POST cut short at the deadline.
        self.retry_at = 0.0
        self.flush(self.deadline)

    def flush(self, deadline=None):
        try:
            self.spool_pending()
            self.send(deadline)
        except Exception:  # never let the capture thread die: log and go on
            traceback.print_exc()

    def stop(self, deadline):
        """Send what was captured, until `deadline` (a time.monotonic()): what is not sent by
        then stays in the spool, for the next start. Called once no request is in flight."""
        self.deadline = deadline
        self.stopping = True
        self.wake.set()
        self.thread.join(max(0.0, deadline - time.monotonic()))
        if self.thread.is_alive():  # stuck in a POST: records still in memory go to disk
            self.spool_pending()
        with self.spool_lock:
            left = len(self.pending) + self.spool.records
        if left:
            sys.stderr.write(f"capture: {left} records left in {self.spool.folder}\n")

    def spool_pending(self):
        with self.lock:
            taken = list(self.pending)
            self.pending.clear()
        records = [r for entry in taken for r in self.to_records(*entry)]
        with self.spool_lock:
            for start in range(0, len(records), self.batch):
                batch = records[start : start + self.batch]
                self.metrics.drop("spool_full", self.spool.add(batch))

    def to_records(self, request_id, at, body, status, answer, latency_ms):
        base = {**IDENTITY, "at": at, "latency_ms": round(latency_ms, 3)}
        if self.environment:
            base["environment"] = self.environment
        error = None if status == 200 else str((answer or {}).get("error") or f"HTTP {status}")
        try:
            rows, columns = parse_body(body)
        except BadRequest:
            return [{**base, "request_id": request_id, "inputs": {}, "outputs": {}, "error": error}]
        names = list(columns) if columns else positional_names(self.model, len(rows[0]))
        predictions = plain(answer.get("predictions")) if error is None else None
        probabilities = plain(answer.get("probabilities")) if error is None else None
        records = []
        for index, row in enumerate(rows):
            values = row if isinstance(row, list | tuple) else [row]
            inputs = {name: feature_value(v) for name, v in zip(names, values, strict=False)}
            outputs = {}
            if isinstance(predictions, list) and index < len(predictions):
                outputs["prediction"] = predictions[index]
            if isinstance(probabilities, list) and index < len(probabilities):
                outputs["probabilities"] = probabilities[index]
            records.append(
                {
                    **base,
                    # One record per row; the ids of a multi-row request are "<id>:<row>".
                    "request_id": request_id if len(rows) == 1 else f"{request_id}:{index}",
                    "inputs": {k: v for k, v in inputs.items() if v is not SKIP},
                    "outputs": outputs,
                    "error": error,
                }
            )
        return records

    def send(self, deadline=None):
        while time.monotonic() >= self.retry_at:
            timeout = 30.0 if deadline is None else min(30.0, deadline - time.monotonic())
            if timeout <= 0:
                return
            with self.spool_lock:
                path, records = self.spool.oldest()
            if path is None:
                return
            status = self.post(records, timeout)
            with self.spool_lock:
                if not self.settle(path, records, status):
                    return

    def settle(self, path, records, status):
        """Act on the registry's answer to one batch; False when it is time to back off."""
        if status == 202:
            self.spool.remove(path)
            self.metrics.count_sent(len(records))
            self.delay = 0.0
        elif status in (400, 413):  # this batch will never be accepted: drop it
            self.spool.remove(path)
            self.metrics.drop("refused", len(records))
        else:  # registry away, overloaded or misconfigured: keep it, retry later
            self.delay = min(max(self.delay * 2, 0.5), self.retry_max)
            self.retry_at = time.monotonic() + self.delay
            return False
        return True

    def post(self, records, timeout):
        # The spool's lines as they are: parsing and encoding them again would only take
        # the GIL from the request threads.
        body = ('{"records":[' + ",".join(records) + "]}").encode()
        request = urllib.request.Request(  # noqa: S310 - http(s) only, checked in __init__
            self.endpoint,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.token}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return response.status
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode("utf-8", "replace")
            sys.stderr.write(f"capture: the registry answered {exc.code}: {detail}\n")
            return exc.code
        except (OSError, ValueError) as exc:  # refused, reset, timed out, DNS
            sys.stderr.write(f"capture: the registry is unreachable ({exc}); will retry\n")
            return None


def handle(method, path, body, model, predict):
    """Answer one request: (HTTP status, JSON-able body)."""
    routes = {"/health": "GET", "/predict": "POST"}
    if path not in routes:
        return 404, {"error": "not found"}
    if method != routes[path]:
        return 405, {"error": f"use {routes[path]}"}
    if path == "/health":
        return 200, {"status": "ok", **IDENTITY}
    try:
        rows, columns = parse_body(body)
        return 200, {**predict(model, rows, columns), **IDENTITY}
    except ValueError as exc:  # BadRequest, and what frameworks raise for wrong shapes/types
        return 400, {"error": str(exc)}


def to_json(value):
    """numpy arrays and scalars, as their Python equivalents."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class RequestReader(io.RawIOBase):
    """The connection's bytes with one deadline for the whole request, not a timeout per
    recv: a client sending a byte a second (slowloris) would keep resetting the latter."""

    def __init__(self, sock, seconds):
        self.sock, self.deadline, self.expired = sock, time.monotonic() + seconds, False

    def readable(self):
        return True

    def readinto(self, buffer):
        try:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request did not arrive in time")
            self.sock.settimeout(left)
            return self.sock.recv_into(buffer)
        except TimeoutError:  # BaseHTTPRequestHandler closes the connection on it
            self.expired = True
            raise


class Handler(BaseHTTPRequestHandler):
    server_version = "modelgate-serve/1"
    timeout = 30.0  # seconds; main() sets it from MODELGATE_SERVE_TIMEOUT

    def setup(self):
        super().setup()  # the socket's timeout, which bounds each write of the answer
        # Closed, or the socket would never really close (makefile() holds a reference).
        self.rfile.close()
        self.reader = RequestReader(self.connection, self.timeout)
        self.rfile = io.BufferedReader(self.reader)

    def finish(self):
        if self.reader.expired:
            self.server.metrics.timed_out()
        super().finish()

    def do_GET(self):
        self.respond(b"")

    def do_POST(self):
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            self.close_connection = True  # the body's end is unknown
            return self.respond(error=(411, {"error": "Content-Length required"}))
        if int(length) > MAX_BODY:
            self.close_connection = True
            return self.respond(error=(413, {"error": f"body over {MAX_BODY} bytes"}))
        self.respond(self.rfile.read(int(length)))

    def respond(self, body=b"", error=None):
        started = time.monotonic()
        at = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")  # noqa: UP017
        incoming = self.headers.get("X-Request-Id", "")
        request_id = incoming if REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        path = self.path.split("?", 1)[0]
        metrics, capture = self.server.metrics, self.server.capture
        content_type, answer = "application/json", None
        try:
            if path == "/metrics" and self.command == "GET" and not error:
                status, content_type, data = metrics.render()
            else:
                status, answer = error or handle(self.command, path, body, *self.server.model)
                data = json.dumps(answer, default=to_json).encode()
        except Exception as exc:
            traceback.print_exc()
            answer = {"error": f"internal error ({type(exc).__name__})"}
            status, data = 500, json.dumps(answer).encode()
        self.connection.settimeout(self.timeout)  # the reader left it at what remained
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Request-Id", request_id)
        self.end_headers()
        self.wfile.write(data)
        seconds = time.monotonic() - started
        if path != "/metrics":
            metrics.observe(path, status, seconds)
        if capture is not None and path == "/predict" and self.command == "POST":
            capture.record(request_id, at, body, status, answer, seconds * 1000)
        sys.stderr.write(f"{self.command} {path} {status} {seconds * 1000:.1f}ms id={request_id}\n")

    def log_request(self, code="-", size="-"):
        """respond() logs each request once, with its id and duration."""


class PooledHTTPServer(HTTPServer):
    """An HTTPServer whose connections are answered by a fixed pool of threads, rather than
    a new thread each (ThreadingHTTPServer), which has no bound under load."""

    def __init__(self, address, threads, backlog):
        self.request_queue_size = backlog  # listen()'s backlog, read by server_activate()
        super().__init__(address, Handler)
        # Bounded: once it is full, the accept loop waits for a worker, and new connections
        # wait in the kernel's backlog rather than in this process's memory.
        self.connections = queue.Queue(backlog)
        self.busy, self.busy_lock = 0, threading.Lock()
        self.workers = [
            threading.Thread(target=self.work, name=f"modelgate-worker-{n}", daemon=True)
            for n in range(threads)
        ]
        for worker in self.workers:
            worker.start()

    def process_request(self, request, client_address):
        # Blocks while the queue is full; a shutdown() then waits for a worker to free a slot.
        self.connections.put((request, client_address))

    def work(self):
        while (item := self.connections.get()) is not None:
            with self.busy_lock:
                self.busy += 1
            try:
                self.finish_request(*item)
            except Exception:
                self.handle_error(*item)
            finally:
                self.shutdown_request(item[0])
                with self.busy_lock:
                    self.busy -= 1

    def drain(self, deadline):
        """Once serve_forever() has returned: take the connections the kernel has already
        completed (their clients are sending), stop listening, and let the workers finish
        every request. Returns how many were left unfinished at `deadline` (a time.monotonic())."""
        self.socket.setblocking(False)
        try:
            while True:
                item = self.socket.accept()
                try:
                    self.connections.put(item, timeout=max(0.0, deadline - time.monotonic()))
                except queue.Full:
                    self.shutdown_request(item[0])
                    break
        except BlockingIOError:  # none left
            pass
        self.server_close()
        try:
            for _ in self.workers:  # after every queued connection: the queue is FIFO
                self.connections.put(None, timeout=max(0.0, deadline - time.monotonic()))
        except queue.Full:
            pass
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        with self.connections.mutex:
            queued = sum(item is not None for item in self.connections.queue)
        return self.busy + queued


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Listening on every interface is what a container needs.
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))  # noqa: S104
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    args = parser.parse_args()
    framework = MANIFEST.get("framework") or ""
    if framework not in FRAMEWORKS:
        sys.exit(f"serve.py: cannot serve framework {framework!r} (supported: sklearn, onnx)")
    load, predict = FRAMEWORKS[framework]
    check_files()  # before any file is loaded, or any framework imported
    model = load()  # before listening, so /health only answers once the model is ready
    env = os.environ
    Handler.timeout = float(env.get("MODELGATE_SERVE_TIMEOUT", "30"))
    if not Handler.timeout > 0:  # 0 would make the sockets non-blocking, not unbounded
        sys.exit("serve.py: MODELGATE_SERVE_TIMEOUT must be a number of seconds above 0")
    drain_seconds = float(env.get("MODELGATE_SERVE_DRAIN_SECONDS", "25"))
    server = PooledHTTPServer(
        (args.host, args.port),
        threads=max(1, int(env.get("MODELGATE_SERVE_THREADS", "8"))),
        backlog=max(1, int(env.get("MODELGATE_SERVE_BACKLOG", "64"))),
    )
    server.model = (model, predict)
    server.metrics = Metrics()
    server.metrics.watch(server)
    server.capture = None
    url, token = env.get("MODELGATE_URL"), env.get("MODELGATE_INGEST_TOKEN")
    if url and token:
        server.capture = Capture(url, token, server.metrics, model).start()
        sys.stderr.write(
            f"capturing predictions to {url} (rate {server.capture.rate}, "
            f"spool {server.capture.spool.folder})\n"
        )
    deadlines = []

    def stop(signum, _frame):
        if deadlines:  # already draining, against the first signal's deadline
            return
        deadlines.append(time.monotonic() + drain_seconds)
        # shutdown() waits for serve_forever() to return, and that runs in this thread.
        threading.Thread(target=server.shutdown, name="modelgate-shutdown").start()

    # As PID 1 in a container, SIGTERM is ignored unless handled: docker stop would hang.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stderr.write(f"serving {framework} model {IDENTITY} on {args.host}:{args.port}\n")
    try:
        server.serve_forever()
    finally:  # a signal, or the accept loop failed: drain either way
        deadline = deadlines[0] if deadlines else time.monotonic() + drain_seconds
        sys.stderr.write(f"draining: up to {deadline - time.monotonic():.1f}s\n")
        unfinished = server.drain(deadline)
        if server.capture is not None:
            server.capture.stop(deadline)
    if unfinished:
        sys.exit(f"serve.py: drained for {drain_seconds}s, connections unfinished: {unfinished}")
    sys.stderr.write("drained: every request answered\n")


if __name__ == "__main__":
    main()
