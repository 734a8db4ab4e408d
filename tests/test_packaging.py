"""Metadata extraction and reproducible deployable packages, without Django or a database."""

import hashlib
import io
import json
import os
import random
import socket
import subprocess
import sys
import tarfile
import time

import httpx
import joblib
import numpy as np
import pytest
import yaml
from sklearn.linear_model import LogisticRegression

from registry.packaging import FileRef, build_package, extract_metadata

META = {
    "model": "Fraud_Detector",
    "version": 3,
    "framework": "sklearn",
    "requirements": ["Scikit_Learn==1.7.2", "numpy>=1.26"],
    "signature": {"inputs": [{"name": "x", "type": "double"}], "outputs": []},
    "metrics": {"auc": 0.91},
    "params": {"C": 1.0},
    "created_at": "2025-01-02T03:04:05Z",
    "created_by": "alice",
}
TOP = "Fraud_Detector-3"


def blobs(contents: dict[str, bytes], scan: str = ""):
    """FileRefs for the given files, each with the scan verdict `scan`, and an open_blob
    reading them from memory."""
    store = {hashlib.sha256(data).hexdigest(): data for data in contents.values()}
    refs = [
        FileRef(path, len(data), hashlib.sha256(data).hexdigest(), scan)
        for path, data in contents.items()
    ]
    return refs, lambda digest: io.BytesIO(store[digest])


def build(meta, refs, open_blob) -> bytes:
    out = io.BytesIO()
    build_package(meta, refs, open_blob, out)
    return out.getvalue()


def model_files():
    rng = random.Random(7)
    return {
        "model.joblib": rng.randbytes(3 * 1024 * 1024 + 5),  # several 1 MiB pieces
        "README.md": b"# Fraud detector\n",
        "extra/notes/a.txt": b"a",
        "extra/b.txt": b"",
    }


def test_packaging_the_same_version_twice_gives_the_same_sha256():
    refs, open_blob = blobs(model_files())
    first = hashlib.sha256(build(META, refs, open_blob)).hexdigest()
    assert hashlib.sha256(build(META, refs, open_blob)).hexdigest() == first
    shuffled = list(refs)
    random.Random(1).shuffle(shuffled)
    assert shuffled != refs
    assert hashlib.sha256(build(META, shuffled, open_blob)).hexdigest() == first
    changed = {**META, "metrics": {"auc": 0.92}}
    assert hashlib.sha256(build(changed, refs, open_blob)).hexdigest() != first


def test_the_package_holds_files_manifest_requirements_dockerfile_and_k8s_manifests():
    files = model_files()
    refs, open_blob = blobs(files)
    data = build(META, refs, open_blob)
    assert len(data) % 10240 == 0  # whole tar records: a complete, closed archive
    assert b"PaxHeader" not in data  # short ASCII names need no pax records, so no timestamps

    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        names = [member.name for member in members]
        assert names == sorted(names)
        assert names == [
            TOP,
            f"{TOP}/Dockerfile",
            f"{TOP}/k8s",
            f"{TOP}/k8s/deployment.yaml",
            f"{TOP}/k8s/service.yaml",
            f"{TOP}/manifest.json",
            f"{TOP}/model",
            f"{TOP}/model/README.md",
            f"{TOP}/model/extra",
            f"{TOP}/model/extra/b.txt",
            f"{TOP}/model/extra/notes",
            f"{TOP}/model/extra/notes/a.txt",
            f"{TOP}/model/model.joblib",
            f"{TOP}/requirements.txt",
            f"{TOP}/serve.py",
        ]
        for member in members:
            assert (member.mtime, member.uid, member.gid) == (946684800, 0, 0)
            assert (member.uname, member.gname) == ("root", "root")
            executable = member.isdir() or member.name == f"{TOP}/serve.py"
            assert member.mode == (0o755 if executable else 0o644), member.name

        def read(name):
            return tar.extractfile(f"{TOP}/{name}").read()

        for path, content in files.items():
            assert read(f"model/{path}") == content

        manifest = json.loads(read("manifest.json"))
        assert (
            read("manifest.json").decode() == json.dumps(manifest, sort_keys=True, indent=2) + "\n"
        )
        assert manifest == {
            "format": "modelgate-package/1",
            "model": "Fraud_Detector",
            "version": 3,
            "files": [
                {"path": ref.path, "size": ref.size, "sha256": ref.sha256, "scan": ""}
                for ref in sorted(refs, key=lambda ref: ref.path)
            ],
            "framework": "sklearn",
            "signature": META["signature"],
            "metrics": {"auc": 0.91},
            "params": {"C": 1.0},
            "requirements": META["requirements"],
            "created_at": "2025-01-02T03:04:05Z",
            "created_by": "alice",
        }

        # scikit-learn is already required (under another spelling): only joblib is added,
        # and prometheus-client, which serve.py's GET /metrics needs.
        assert read("requirements.txt").decode().splitlines() == [
            "Scikit_Learn==1.7.2",
            "numpy>=1.26",
            "joblib",
            "prometheus-client",
        ]

        dockerfile = read("Dockerfile").decode()
        assert "FROM python:3.11-slim" in dockerfile
        assert "pip install -r requirements.txt" in dockerfile
        assert (
            "USER 10001" in dockerfile and "HEALTHCHECK" in dockerfile and "/health" in dockerfile
        )
        assert 'CMD ["python", "serve.py"]' in dockerfile and "PORT=8080" in dockerfile

        deployment = yaml.safe_load(read("k8s/deployment.yaml"))
        assert deployment["kind"] == "Deployment"
        assert deployment["metadata"]["name"] == "fraud-detector"
        assert deployment["spec"]["replicas"] == 1
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == "fraud-detector:3"
        assert container["readinessProbe"]["httpGet"]["path"] == "/health"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert container["resources"]["requests"]["cpu"]
        assert container["ports"][0]["containerPort"] == 8080

        service = yaml.safe_load(read("k8s/service.yaml"))
        assert service["kind"] == "Service" and service["spec"]["type"] == "ClusterIP"
        assert service["metadata"]["name"] == "fraud-detector"
        assert service["spec"]["ports"][0]["port"] == 80
        assert service["spec"]["ports"][0]["targetPort"] == 8080
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_manifest_lists_each_files_sha256_and_scan_verdict():
    verdicts = {"model.pkl": "clean", "evil.pkl": "unsafe", "odd.bin": "unverified", "x.txt": ""}
    contents = {path: path.encode() * 3 for path in verdicts}
    refs = [
        FileRef(path, len(data), hashlib.sha256(data).hexdigest(), scan=verdicts[path])
        for path, data in contents.items()
    ]
    store = {ref.sha256: contents[ref.path] for ref in refs}
    data = build(META, refs, lambda digest: io.BytesIO(store[digest]))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        manifest = json.loads(tar.extractfile(f"{TOP}/manifest.json").read())
    assert manifest["files"] == [
        {
            "path": path,
            "size": len(contents[path]),
            "sha256": hashlib.sha256(contents[path]).hexdigest(),
            "scan": verdicts[path],
        }
        for path in sorted(verdicts)
    ]
    # FileRef(path, size, sha256) still works: the verdict is then unknown.
    assert FileRef("a", 1, "0" * 64).scan == ""


def test_a_skops_file_adds_skops_to_the_requirements():
    refs, open_blob = blobs({"model.skops": b"zip", "model.joblib": b"pickle"})
    with tarfile.open(fileobj=io.BytesIO(build(META, refs, open_blob))) as tar:
        requirements = tar.extractfile(f"{TOP}/requirements.txt").read().decode()
    assert requirements.splitlines() == [
        "Scikit_Learn==1.7.2",
        "numpy>=1.26",
        "joblib",
        "skops",
        "prometheus-client",
    ]


def test_kubernetes_names_are_dns_labels_whatever_the_model_name():
    refs, open_blob = blobs({"m.onnx": b"x"})
    meta = {**META, "model": "9" + "Ünicode.Model__" * 10, "framework": "onnx"}
    with tarfile.open(fileobj=io.BytesIO(build(meta, refs, open_blob))) as tar:
        deployment = tar.extractfile(f"{meta['model']}-3/k8s/deployment.yaml").read()
        requirements = tar.extractfile(f"{meta['model']}-3/requirements.txt").read().decode()
    name = yaml.safe_load(deployment)["metadata"]["name"]
    assert len(name) <= 63 and name[0].isalpha() and name[-1] != "-"
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    # numpy is already declared: only onnxruntime is added.
    assert requirements.splitlines() == [
        "Scikit_Learn==1.7.2",
        "numpy>=1.26",
        "onnxruntime",
        "prometheus-client",
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_serving_entrypoint_answers_predict_for_a_scikit_learn_model(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 3))
    model = LogisticRegression().fit(features, (features[:, 0] + features[:, 1] > 0).astype(int))
    dumped = io.BytesIO()
    joblib.dump(model, dumped)
    refs, open_blob = blobs({"model.joblib": dumped.getvalue()}, scan="clean")
    with tarfile.open(fileobj=io.BytesIO(build(META, refs, open_blob))) as tar:
        tar.extractall(tmp_path, filter="data")

    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, str(tmp_path / TOP / "serve.py"), "--host", "127.0.0.1"],
        env={**os.environ, "PORT": str(port)},
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                health = httpx.get(f"{base}/health")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "serve.py did not start"
                time.sleep(0.1)
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "model": "Fraud_Detector", "version": 3}

        rows = features[:5]
        answer = httpx.post(f"{base}/predict", json={"instances": rows.tolist()})
        assert answer.status_code == 200
        assert len(answer.headers["X-Request-Id"]) == 32
        body = answer.json()
        assert body["predictions"] == model.predict(rows).tolist()
        assert np.allclose(body["probabilities"], model.predict_proba(rows))
        assert (body["model"], body["version"]) == ("Fraud_Detector", 3)

        columns = {f"f{index}": rows[:, index].tolist() for index in range(3)}
        answer = httpx.post(
            f"{base}/predict", json={"inputs": columns}, headers={"X-Request-Id": "abc-123"}
        )
        assert answer.headers["X-Request-Id"] == "abc-123"
        assert answer.json()["predictions"] == model.predict(rows).tolist()

        bad = httpx.post(f"{base}/predict", content=b"{not json")
        assert bad.status_code == 400 and "error" in bad.json()
        assert bad.headers["X-Request-Id"]
        wrong_shape = httpx.post(f"{base}/predict", json={"instances": [[1.0, 2.0]]})
        assert wrong_shape.status_code == 400 and "Traceback" not in wrong_shape.text
        assert httpx.post(f"{base}/predict", json={"rows": []}).status_code == 400
        assert httpx.get(f"{base}/nowhere").status_code == 404
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
    assert "POST /predict 200" in (tmp_path / "serve.log").read_text()


MLMODEL = """\
artifact_path: model
flavors:
  python_function:
    env:
      conda: conda.yaml
      virtualenv: python_env.yaml
    loader_module: mlflow.sklearn
    model_path: model.pkl
    python_version: 3.11.7
  sklearn:
    code: null
    pickled_model: model.pkl
    serialization_format: cloudpickle
    sklearn_version: 1.7.2
mlflow_version: 2.17.0
model_uuid: 0f3c6f0e5b4a4f0c9d4c8c4b2a1e9d77
run_id: 8d1c4e3b2a9f4e6d8c7b6a5f4e3d2c1b
signature:
  inputs: '[{"type": "double", "name": "x"}]'
  outputs: '[{"type": "long", "name": "label"}]'
  params: null
utc_time_created: 2025-01-02 03:04:05.123456
"""
CONDA = """\
channels: [conda-forge]
dependencies:
- python=3.11.7
- pip<=24.0
- pip:
  - mlflow==2.17.0
  - cloudpickle==3.1.0
  - scikit-learn==1.7.2
name: mlflow-env
"""


def test_an_mlflow_folder_gives_framework_signature_model_card_and_requirements():
    refs, open_blob = blobs(
        {
            "README.md": "# Churn model\n\nPredicts churn. \u00e9\n".encode(),
            "requirements.txt": b"# pinned\nscikit-learn==1.7.2  # the model's\n\n-r more.txt\n",
            "model/MLmodel": MLMODEL.encode(),
            "model/conda.yaml": CONDA.encode(),
            "model/requirements.txt": b"mlflow==2.17.0\ncloudpickle==3.1.0\nScikit-Learn==1.7.2\n",
            "model/model.pkl": b"never unpickled",
            "model/deeper/MLmodel": b"flavors:\n  pytorch: {}\n",
        }
    )
    meta = extract_metadata(refs, open_blob)
    assert meta["framework"] == "sklearn"
    assert meta["signature"] == {
        "inputs": [{"type": "double", "name": "x"}],
        "outputs": [{"type": "long", "name": "label"}],
    }
    assert meta["model_card"] == "# Churn model\n\nPredicts churn. \u00e9\n"
    assert meta["requirements"] == ["scikit-learn==1.7.2", "mlflow==2.17.0", "cloudpickle==3.1.0"]
    assert meta["mlflow"]["run_id"] == "8d1c4e3b2a9f4e6d8c7b6a5f4e3d2c1b"
    assert meta["mlflow"]["model_uuid"] == "0f3c6f0e5b4a4f0c9d4c8c4b2a1e9d77"
    assert meta["mlflow"]["utc_time_created"] == "2025-01-02T03:04:05.123456"
    assert meta["mlflow"]["flavors"]["sklearn"]["pickled_model"] == "model.pkl"
    assert set(meta) == {"framework", "signature", "model_card", "requirements", "mlflow"}
    json.dumps(meta)  # stored as JSON by the worker


def test_without_mlmodel_the_framework_is_guessed_and_oversized_files_are_skipped():
    refs, open_blob = blobs(
        {
            "clf.joblib": b"weights",
            "requirements.txt": b"scikit_learn>=1.5\n",
            "MODEL_CARD.md": b"x" * (300 * 1024),
            "sub/README.md": b"not at the root",
        }
    )
    meta = extract_metadata(refs, open_blob)
    assert meta == {
        "framework": "sklearn",
        "requirements": ["scikit_learn>=1.5"],
        "model_card": "x" * (256 * 1024),
    }
    huge, open_huge = blobs({"requirements.txt": b"numpy\n" * 200_000, "w.pkl": b"w"})
    assert extract_metadata(huge, open_huge) == {}


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, value) -> bytes:
    """One protobuf field: ints as varints, str/bytes length-delimited."""
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    data = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(data)) + data


def value_info(name: str, elem_type: int, dims: list) -> bytes:
    shape = b"".join(
        field(1, field(2, dim) if isinstance(dim, str) else field(1, dim)) for dim in dims
    )
    return field(1, name) + field(2, field(1, field(1, elem_type) + field(2, shape)))


WEIGHTS = 3 * 1024 * 1024


def hand_encoded_onnx() -> bytes:
    """A ModelProto as an old exporter writes it: the weight is also listed as an input."""
    initializer = (
        field(1, 3) + field(1, 256) + field(2, 1) + field(8, "W") + field(9, b"\0" * WEIGHTS)
    )
    node = field(1, "x") + field(1, "W") + field(2, "y") + field(4, "MatMul")
    graph = (
        field(1, node)
        + field(2, "tiny")
        + field(5, initializer)
        + field(11, value_info("x", 1, ["N", 3]))
        + field(11, value_info("mask", 9, ["N"]))
        + field(11, value_info("W", 1, [3, 256]))
        + field(12, value_info("y", 11, ["N", -1]))
    )
    return (
        field(1, 7) + field(2, "handmade") + field(7, graph) + field(8, field(1, "") + field(2, 17))
    )


class Unseekable:
    """A stream that only reads, recording the largest read asked for and the total read."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)
        self.largest = self.total = 0

    def read(self, size: int = -1) -> bytes:
        assert size >= 0, "the whole file was asked for"
        self.largest = max(self.largest, size)
        chunk = self._data.read(size)
        self.total += len(chunk)
        return chunk

    def close(self) -> None:
        self._data.close()


def test_onnx_inputs_and_outputs_are_read_without_holding_the_weights():
    data = hand_encoded_onnx()
    refs, _ = blobs({"model.onnx": data})
    streams = []

    def open_blob(digest):
        streams.append(Unseekable(data))
        return streams[-1]

    meta = extract_metadata(refs, open_blob)
    inputs = [
        {"name": "x", "type": "float", "shape": ["N", 3]},
        {"name": "mask", "type": "bool", "shape": ["N"]},
    ]
    outputs = [{"name": "y", "type": "double", "shape": ["N", -1]}]
    assert meta["framework"] == "onnx"
    assert meta["onnx"] == {
        "ir_version": 7,
        "producer": "handmade",
        "opset": [{"domain": "", "version": 17}],
        "inputs": inputs,
        "outputs": outputs,
    }
    assert meta["signature"] == {"inputs": inputs, "outputs": outputs}
    assert len(streams) == 1 and streams[0].total == len(data)
    assert streams[0].largest < 2 * 1024 * 1024

    # A seekable stream skips the weights by seeking, with the same result.
    refs, seekable_blob = blobs({"model.onnx": data})
    assert extract_metadata(refs, seekable_blob) == meta


def test_a_model_built_with_the_onnx_package_reads_the_same():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.zeros((1024, 768), dtype=np.float32), name="W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "tiny",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, [None, 7]),
            helper.make_tensor_value_info("W", TensorProto.FLOAT, [1024, 768]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 768])],
        initializer=[weights],
    )
    model = helper.make_model(
        graph, producer_name="pytest", opset_imports=[helper.make_opsetid("", 13)]
    )
    data = model.SerializeToString()
    refs, open_blob = blobs({"nested/model.onnx": data, "other/deeper/b.onnx": b"garbage"})
    found = extract_metadata(refs, open_blob)["onnx"]
    assert found["inputs"] == [
        {"name": "x", "type": "float", "shape": ["N", 3]},
        {"name": "ids", "type": "int64", "shape": [None, 7]},
    ]
    assert found["outputs"] == [{"name": "y", "type": "float", "shape": ["N", 768]}]
    assert found["opset"] == [{"domain": "", "version": 13}]
    assert found["producer"] == "pytest" and found["ir_version"] == onnx.IR_VERSION


def test_a_file_that_is_not_onnx_is_skipped_without_error():
    for garbage in (b"\xff" * 100, b"not a model at all", hand_encoded_onnx()[:1000]):
        refs, open_blob = blobs({"model.onnx": garbage})
        assert extract_metadata(refs, open_blob) == {"framework": "onnx"}


@pytest.mark.parametrize(
    "stored", [b"weights", b"weights and more", b"weightz!"], ids=["shorter", "longer", "altered"]
)
def test_a_blob_that_does_not_match_its_file_ref_stops_the_package(stored):
    claimed = b"weights!"
    ref = FileRef("model.pkl", len(claimed), hashlib.sha256(claimed).hexdigest())
    with pytest.raises(ValueError, match=r"model\.pkl"):
        build_package(META, [ref], lambda digest: io.BytesIO(stored), io.BytesIO())


def test_unsafe_or_clashing_paths_are_refused():
    for paths in (["../x"], ["a/../../x"], ["/abs"], ["a", "a/b"], ["a/b", "a"], ["a", "a"]):
        refs = [FileRef(path, 1, "0" * 64) for path in paths]
        with pytest.raises(ValueError):
            build_package(META, refs, lambda digest: io.BytesIO(b"!"), io.BytesIO())
