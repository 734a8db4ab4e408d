"""The packaged serve.py loads only what the registry judged: each file under model/ must match
its manifest entry (size and sha256), and only a file whose scan verdict is "clean" is loaded.
Each case runs the real serve.py of an unpacked package in its own process. The payloads are
harmless: loading one creates a canary file, so "never unpickled" means "no canary"."""

import hashlib
import io
import json
import operator
import os
import pickle
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from registry.packaging import FileRef, build_package

META = {"model": "churn", "version": 1, "framework": "sklearn"}


class Canary:
    """Unpickling it creates the file at `path`: the proof that a pickle was loaded."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "x")


class Stop:
    """Unpickling it raises, so a payload that did load ends serve.py instead of serving."""

    def __reduce__(self):
        return int, ("the payload ran",)


def payload(canary: Path, suffix: str = ".pkl") -> bytes:
    if suffix == ".joblib":
        out = io.BytesIO()
        joblib.dump([Canary(canary), Stop()], out)
        return out.getvalue()
    return pickle.dumps([Canary(canary), Stop()])


def unpack(tmp_path: Path, files: dict[str, bytes], scan="clean", meta=META) -> Path:
    """Package `files`, each with the scan verdict `scan`, and unpack it as a user would."""
    refs = [
        FileRef(p, len(data), hashlib.sha256(data).hexdigest(), scan) for p, data in files.items()
    ]
    store = {ref.sha256: files[ref.path] for ref in refs}
    out = io.BytesIO()
    build_package(meta, refs, lambda digest: io.BytesIO(store[digest]), out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        tar.extractall(tmp_path / "package", filter="data")
    return tmp_path / "package" / f"{meta['model']}-{meta['version']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(folder: Path) -> subprocess.CompletedProcess:
    """Run serve.py until it exits; a serve.py that starts serving instead times out."""
    command = [sys.executable, str(folder / "serve.py"), "--host", "127.0.0.1"]
    return subprocess.run(
        [*command, "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MODELGATE_URL": "", "MODELGATE_INGEST_TOKEN": ""},
    )


def assert_refused(result: subprocess.CompletedProcess, reason: str) -> None:
    assert result.returncode != 0
    assert "serve.py: refusing to serve:" in result.stderr, result.stderr
    assert reason in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def set_verdict(folder: Path, path: str, verdict: str) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    [entry] = [entry for entry in manifest["files"] if entry["path"] == path]
    entry["scan"] = verdict
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", ["model.pkl", "model.joblib"])
def test_a_clean_verdict_and_matching_bytes_let_the_pickle_load(tmp_path, name):
    # The control: the payload does run once serve.py unpickles it, so a missing canary in
    # the other tests means serve.py never unpickled, not that the payload is broken.
    canary = tmp_path / "canary"
    folder = unpack(tmp_path, {name: payload(canary, Path(name).suffix)})
    result = serve(folder)
    assert result.returncode != 0 and "the payload ran" in result.stderr, result.stderr
    assert canary.exists()


@pytest.mark.parametrize("verdict", ["unsafe", "unverified", ""])
@pytest.mark.parametrize("name", ["model.pkl", "model.joblib"])
def test_a_pickle_whose_manifest_verdict_is_not_clean_is_never_unpickled(tmp_path, name, verdict):
    canary = tmp_path / "canary"
    folder = unpack(tmp_path, {name: payload(canary, Path(name).suffix), "README.md": b"# m\n"})
    set_verdict(folder, name, verdict)  # as an edited manifest, or the registry, would say
    assert_refused(serve(folder), f"model/{name} has the scan verdict {verdict or 'unknown'!r}")
    assert not canary.exists()


def test_a_package_built_with_an_unknown_verdict_is_refused(tmp_path):
    canary = tmp_path / "canary"
    folder = unpack(tmp_path, {"model.pkl": payload(canary)}, scan="")
    assert_refused(serve(folder), "model/model.pkl has the scan verdict 'unknown'")
    assert not canary.exists()


def test_a_model_file_changed_after_packaging_is_refused(tmp_path):
    # One byte apart: the package's own (clean) pickle, and a same-size one swapped in later.
    packaged, swapped = tmp_path / "canary-1", tmp_path / "canary-2"
    original, tampered = payload(packaged), payload(swapped)
    assert len(original) == len(tampered) and original != tampered
    folder = unpack(tmp_path, {"model.pkl": original})
    (folder / "model" / "model.pkl").write_bytes(tampered)
    assert_refused(serve(folder), "model/model.pkl does not match its sha256 in manifest.json")
    assert not packaged.exists() and not swapped.exists()


def test_a_model_file_of_another_size_is_refused(tmp_path):
    canary = tmp_path / "canary"
    folder = unpack(tmp_path, {"model.pkl": payload(canary)})
    with (folder / "model" / "model.pkl").open("ab") as file:
        file.write(b".")
    size = len(payload(canary))
    assert_refused(serve(folder), f"model/model.pkl is {size + 1} bytes, manifest.json says {size}")
    assert not canary.exists()


def test_a_file_the_manifest_does_not_list_is_refused(tmp_path):
    canary = tmp_path / "canary"
    folder = unpack(tmp_path, {"model/model.pkl": b"harmless"})
    # Shallower than the packaged model, so it is the one serve.py would pick.
    (folder / "model" / "a.pkl").write_bytes(payload(canary))
    assert_refused(serve(folder), "model/a.pkl is not a file listed in manifest.json")
    assert not canary.exists()


def test_a_symbolic_link_under_model_is_refused(tmp_path):
    canary = tmp_path / "canary"
    outside = tmp_path / "elsewhere.pkl"
    outside.write_bytes(payload(canary))
    folder = unpack(tmp_path, {"model.pkl": payload(canary)})
    (folder / "model" / "model.pkl").unlink()
    (folder / "model" / "model.pkl").symlink_to(outside)
    assert_refused(serve(folder), "model/model.pkl is a symbolic link")
    assert not canary.exists()


def test_a_file_the_manifest_lists_but_the_package_lacks_is_refused(tmp_path):
    canary = tmp_path / "canary"
    folder = unpack(tmp_path, {"model.pkl": payload(canary), "MLmodel": b"x: 1\n"})
    (folder / "model" / "MLmodel").unlink()
    assert_refused(serve(folder), "model/MLmodel, listed in manifest.json, is missing")
    assert not canary.exists()


def test_an_onnx_file_whose_verdict_is_not_clean_is_refused(tmp_path):
    meta = {**META, "framework": "onnx"}
    folder = unpack(tmp_path, {"model.onnx": b"\x08\x07"}, scan="unverified", meta=meta)
    # Refused before onnxruntime is even imported: it need not be installed to be refused.
    assert_refused(serve(folder), "model/model.onnx has the scan verdict 'unverified'")


def fitted(*steps):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 3))
    labels = (features[:, 0] + features[:, 1] > 0).astype(int)
    return make_pipeline(*steps, LogisticRegression()).fit(features, labels), features[:5]


def test_a_skops_file_holding_types_skops_does_not_trust_is_refused(tmp_path):
    skops_io = pytest.importorskip("skops.io")
    model, _ = fitted(FunctionTransformer(operator.neg))
    folder = unpack(tmp_path, {"model.skops": skops_io.dumps(model)})
    assert_refused(
        serve(folder), "model/model.skops holds types skops does not trust: _operator.neg"
    )


def test_a_skops_file_is_loaded_in_preference_to_a_pickle_and_serves(tmp_path):
    skops_io = pytest.importorskip("skops.io")
    model, rows = fitted(StandardScaler())
    canary = tmp_path / "canary"
    # Both clean: serve.py must still choose the format that loads without unpickling.
    folder = unpack(
        tmp_path, {"model.skops": skops_io.dumps(model), "model.joblib": payload(canary, ".joblib")}
    )
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, str(folder / "serve.py"), "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "MODELGATE_URL": "", "MODELGATE_INGEST_TOKEN": ""},
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                answer = httpx.post(
                    f"http://127.0.0.1:{port}/predict", json={"instances": rows.tolist()}
                )
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "serve.py did not start"
                time.sleep(0.1)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == model.predict(rows).tolist()
        assert np.allclose(answer.json()["probabilities"], model.predict_proba(rows))
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
    assert not canary.exists()
