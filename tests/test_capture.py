"""Capture in the packaged serving entrypoint: the real serve.py of an unpacked package, in a
subprocess, sending prediction records to a real registry (gunicorn) that goes away and
comes back; a bounded spool; Prometheus metrics."""

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from registry.models import PredictionRecord
from registry.packaging import FileRef, build_package
from registry.services.tokens import create_token

from .conftest import token_for, wait_for
from .processes import free_port


def trained_model() -> bytes:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 3))
    model = LogisticRegression().fit(features, (features[:, 0] > 0).astype(int))
    out = io.BytesIO()
    joblib.dump(model, out)
    return out.getvalue()


class Serving:
    """serve.py from an unpacked package, in its own process."""

    def __init__(self, folder: Path, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = folder.parent / f"serve-{self.port}.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, str(folder / "serve.py"), "--host", "127.0.0.1"],
            env={**os.environ, "PORT": str(self.port), **env},
            stderr=self.log,
        )
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.output()
            try:
                httpx.get(f"{self.url}/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "serve.py did not start"
                time.sleep(0.1)

    def predict(self, rows: list[list[float]]) -> httpx.Response:
        response = httpx.post(f"{self.url}/predict", json={"instances": rows}, timeout=10)
        assert response.status_code == 200, response.text
        return response

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"{self.url}/metrics").text
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.log.close()


def unpack(api: httpx.Client, model: str, number: int, into: Path) -> Path:
    package = api.get(f"/models/{model}/versions/{number}/package/")
    assert package.status_code == 200, package.text
    with tarfile.open(fileobj=io.BytesIO(package.content)) as tar:
        tar.extractall(into, filter="data")
    return into / f"{model}-{number}"


def test_records_captured_while_the_registry_is_down_arrive_exactly_once_when_it_is_back(
    stack, alice, tmp_path
):
    redis = stack.redis()
    web = stack.web(redis.url)
    stack.worker(redis.url)
    api = httpx.Client(
        base_url=f"{web.url}/api/v1",
        headers={"Authorization": f"Bearer {token_for(alice)}"},
        timeout=60,
    )
    api.post("/models/", json={"name": "churn"}).raise_for_status()
    created = api.post(
        "/models/churn/versions/",
        files=[
            ("files", ("model.joblib", trained_model())),
            ("files", ("requirements.txt", b"scikit-learn\n")),
        ],
        data={"metadata": "{}"},
    )
    assert created.status_code == 201, created.text
    number = created.json()["version"]
    wait_for(
        lambda: api.get(f"/models/churn/versions/{number}/").json()["state"] == "ready",
        timeout=120,
    )
    folder = unpack(api, "churn", number, tmp_path / "package")
    # Made here rather than over HTTP: gunicorn's token throttle is shared through Redis.
    _, token = create_token(alice, "serving", ["ingest"], model="churn", environment="staging")

    serving = Serving(
        folder,
        MODELGATE_URL=web.url,
        MODELGATE_INGEST_TOKEN=token,
        MODELGATE_ENVIRONMENT="staging",
        MODELGATE_SPOOL_DIR=str(tmp_path / "spool"),
        MODELGATE_CAPTURE_INTERVAL="0.2",
        MODELGATE_CAPTURE_BATCH="25",
        MODELGATE_CAPTURE_RETRY_MAX="1",
    )
    expected: list[str] = []
    rng = np.random.default_rng(5)

    def traffic(requests: int) -> None:
        for index in range(requests):
            rows = rng.normal(size=(2 if index % 10 == 0 else 1, 3)).round(6).tolist()
            request_id = serving.predict(rows).headers["X-Request-ID"]
            expected.extend(
                [request_id] if len(rows) == 1 else [f"{request_id}:{i}" for i in range(2)]
            )

    def stored() -> list[str]:
        return list(PredictionRecord.objects.values_list("request_id", flat=True))

    try:
        traffic(60)
        wait_for(lambda: len(stored()) == len(expected), timeout=30)

        web.stop()  # the registry goes away; serving goes on
        started = time.monotonic()
        traffic(150)
        assert time.monotonic() - started < 30  # answers do not wait for the registry
        wait_for(lambda: serving.metrics()["modelgate_capture_queue_depth"] >= 165, timeout=10)
        assert list((tmp_path / "spool").glob("*.jsonl"))
        assert len(stored()) == 66

        web.start()  # same port: the registry is back
        wait_for(lambda: len(stored()) >= len(expected), timeout=60)
        traffic(30)
        wait_for(lambda: len(stored()) >= len(expected), timeout=30)
        time.sleep(1.0)  # anything sent twice would have arrived by now
        ids = stored()
        assert len(ids) == len(expected) == 66 + 165 + 33
        assert Counter(ids) == Counter(expected)  # every record, exactly once
        metrics = serving.metrics()
        assert metrics["modelgate_capture_queue_depth"] == 0
        assert metrics["modelgate_capture_sent_records_total"] == len(expected)
        assert not any(k.startswith("modelgate_capture_dropped") for k in metrics)
        assert metrics['modelgate_serve_requests_total{path="/predict",status="200"}'] == 240
        assert metrics['modelgate_serve_request_duration_seconds_count{path="/predict"}'] == 240
    finally:
        serving.stop()

    one = PredictionRecord.objects.get(request_id=expected[-1])
    assert (one.environment, one.version_number, one.error) == ("staging", number, "")
    assert set(one.inputs) == {"0", "1", "2"} and one.outputs["prediction"] in (0, 1)
    assert len(one.outputs["probabilities"]) == 2 and one.latency_ms > 0


@pytest.fixture
def package(tmp_path) -> Path:
    data = trained_model()
    digest = hashlib.sha256(data).hexdigest()
    meta = {"model": "churn", "version": 1, "framework": "sklearn", "requirements": []}
    out = io.BytesIO()
    build_package(
        meta,
        [FileRef("model.joblib", len(data), digest, scan="clean")],
        lambda _: io.BytesIO(data),
        out,
    )
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        tar.extractall(tmp_path / "package", filter="data")
    return tmp_path / "package" / "churn-1"


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_full_spool_drops_the_oldest_records_and_counts_them(package, tmp_path):
    spool = tmp_path / "spool"
    serving = Serving(
        package,
        MODELGATE_URL=closed_port_url(),
        MODELGATE_INGEST_TOKEN="mgt_x_y",
        MODELGATE_ENVIRONMENT="staging",
        MODELGATE_SPOOL_DIR=str(spool),
        MODELGATE_SPOOL_MAX_RECORDS="20",
        MODELGATE_CAPTURE_INTERVAL="0.1",
        MODELGATE_CAPTURE_BATCH="5",
    )
    try:
        ids = [
            serving.predict(
                [[0.1 * i, 0.2, 0.3]],
            ).headers["X-Request-ID"]
            for i in range(50)
        ]
        metrics = wait_for(
            lambda: (
                (m := serving.metrics()).get(
                    'modelgate_capture_dropped_records_total{reason="spool_full"}'
                )
                == 30
                and m
            ),
            timeout=15,
        )
        assert metrics["modelgate_capture_queue_depth"] == 20
        # /predict answers with errors are counted and captured too.
        bad = httpx.post(f"{serving.url}/predict", content=b"{nope")
        assert bad.status_code == 400 and bad.headers["X-Request-ID"]
        errors = wait_for(
            lambda: (
                (m := serving.metrics()).get(
                    'modelgate_capture_dropped_records_total{reason="spool_full"}'
                )
                == 31
                and m
            ),
            timeout=15,
        )
        assert errors["modelgate_capture_queue_depth"] == 20
        assert errors['modelgate_serve_errors_total{path="/predict",status="400"}'] == 1
    finally:
        serving.stop()
    spooled = [
        json.loads(line)
        for path in sorted(spool.glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    # The newest 20 are kept (after a clean stop, the error record is spooled too).
    kept = [r["request_id"] for r in spooled]
    assert kept[:-1] == ids[-19:] and kept[-1] == bad.headers["X-Request-ID"]
    assert spooled[-1]["error"].startswith("invalid JSON")
    assert spooled[0]["environment"] == "staging" and spooled[0]["model"] == "churn"


def test_without_capture_settings_nothing_is_spooled_and_metrics_still_answer(package):
    serving = Serving(package, MODELGATE_URL="", MODELGATE_INGEST_TOKEN="")
    try:
        serving.predict([[1.0, 2.0, 3.0]])
        metrics = serving.metrics()
        assert metrics['modelgate_serve_requests_total{path="/predict",status="200"}'] == 1
        assert "modelgate_capture_queue_depth" in metrics  # declared, never set: 0
        assert metrics["modelgate_capture_queue_depth"] == 0
    finally:
        serving.stop()
    assert "capturing" not in serving.output()


def test_the_package_requires_prometheus_client_for_its_metrics(package):
    # Without it serve.py answers 501 on GET /metrics; the Dockerfile installs this file.
    assert (package / "requirements.txt").read_text().splitlines() == [
        "joblib",
        "scikit-learn",
        "prometheus-client",
    ]
    # A version's own pin (any spelling) wins over the bare name.
    data = b"weights"
    ref = FileRef("model.joblib", len(data), hashlib.sha256(data).hexdigest())
    meta = {"model": "churn", "version": 2, "framework": "onnx"}
    meta["requirements"] = ["Prometheus_Client==0.21.1"]
    out = io.BytesIO()
    build_package(meta, [ref], lambda _: io.BytesIO(data), out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        requirements = tar.extractfile("churn-2/requirements.txt").read().decode()
    assert requirements.splitlines() == ["Prometheus_Client==0.21.1", "onnxruntime", "numpy"]
