"""Serve the model packaged next to this file: GET /health and POST /predict, JSON in and out.

Standard library only, plus the model's framework (scikit-learn or onnxruntime). Run it with
`python serve.py [--host HOST] [--port PORT]`; HOST and PORT env vars set the defaults.
"""

import argparse
import json
import os
import pickle
import re
import signal
import sys
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL_DIR = HERE / "model"
MANIFEST = json.loads((HERE / "manifest.json").read_text("utf-8"))
IDENTITY = {"model": MANIFEST["model"], "version": MANIFEST["version"]}
MAX_BODY = 16 * 1024 * 1024
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
# onnxruntime names types "tensor(int64)"; these three differ from numpy's names.
ONNX_TO_NUMPY = {"float": "float32", "double": "float64", "string": "object"}


class BadRequest(ValueError):
    """The request, not the model, is at fault: answered with 400."""


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


def load_sklearn():
    path = mlflow_pickled_model() or first_file("*.joblib", "*.pkl", "*.pickle")
    if path is None:
        sys.exit("serve.py: no .joblib, .pkl or .pickle file under model/")
    if path.suffix == ".joblib":
        import joblib

        return joblib.load(path)
    with path.open("rb") as file:
        return pickle.load(file)  # noqa: S301 - the user's own model, in the user's deployment


def load_onnx():
    import onnxruntime

    path = first_file("*.onnx")
    if path is None:
        sys.exit("serve.py: no .onnx file under model/")
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


class Handler(BaseHTTPRequestHandler):
    server_version = "modelgate-serve/1"

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
        incoming = self.headers.get("X-Request-Id", "")
        request_id = incoming if REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        path = self.path.split("?", 1)[0]
        try:
            status, answer = error or handle(self.command, path, body, *self.server.model)
            data = json.dumps(answer, default=to_json).encode()
        except Exception as exc:
            traceback.print_exc()
            status, data = 500, json.dumps({"error": f"internal error ({type(exc).__name__})"})
            data = data.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Request-Id", request_id)
        self.end_headers()
        self.wfile.write(data)
        elapsed = (time.monotonic() - started) * 1000
        sys.stderr.write(f"{self.command} {path} {status} {elapsed:.1f}ms id={request_id}\n")

    def log_request(self, code="-", size="-"):
        """respond() logs each request once, with its id and duration."""


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
    model = load()  # before listening, so /health only answers once the model is ready
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.model = (model, predict)
    # As PID 1 in a container, SIGTERM is ignored unless handled: docker stop would hang.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.stderr.write(f"serving {framework} model {IDENTITY} on {args.host}:{args.port}\n")
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
