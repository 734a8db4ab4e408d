"""The model-file scanner: finds unsafe pickles by reading bytes, never by loading them.

Every sample is built here; malicious ones point their command at a canary file that must
still be missing after the scan, which proves nothing was executed.
"""

import io
import json
import os
import pickle
import pickletools
import random
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from registry.scanner import Finding, ScanResult, combine, pickles, policy, scan_file

ROOT = Path(__file__).resolve().parent.parent


class _System:
    """Pickles as a call to os.system (recorded as posix.system on Linux)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Unseekable:
    """A stream with nothing but read() and close(), like a network body."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def read(self, size=-1):
        return self._data.read(size)

    def close(self):
        self._data.close()


@pytest.fixture
def canary(tmp_path):
    path = tmp_path / "canary"
    yield path
    assert not path.exists(), "a scanned sample ran its payload"


def _scan(path: Path) -> ScanResult:
    return scan_file(path.name, lambda: open(path, "rb"))


def _scan_bytes(name: str, data: bytes, *, seekable: bool = True) -> ScanResult:
    if seekable:
        return scan_file(name, lambda: io.BytesIO(data))
    return scan_file(name, lambda: _Unseekable(data))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _is_system(finding: Finding) -> bool:
    return finding.module in {"os", "posix", "nt"} and finding.name == "system"


def _malicious(canary: Path, protocol: int = 4) -> bytes:
    return pickle.dumps({"weights": [1.0, 2.0], "hook": _System(f"touch {canary}")}, protocol)


def _models():
    rng = np.random.RandomState(0)
    features = rng.rand(40, 3)
    labels = (features[:, 0] > 0.5).astype(int)
    return [
        LogisticRegression().fit(features, labels),
        RandomForestClassifier(n_estimators=3, random_state=0).fit(features, labels),
    ]


# -- malicious samples -----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_a_pickle_that_calls_os_system_is_unsafe(tmp_path, canary, protocol):
    data = _malicious(canary, protocol)
    result = _scan(_write(tmp_path / "model.pkl", data))

    assert result.status == "unsafe"
    assert result.scanned == ["model.pkl"]
    [finding] = [f for f in result.findings if _is_system(f)]
    assert finding.severity == "unsafe"
    assert finding.file == "model.pkl"
    assert data[finding.offset] in b"c\x93"  # GLOBAL or STACK_GLOBAL sits at the offset
    assert "system" in finding.detail


def test_the_same_pickle_inside_a_pytorch_style_zip_is_unsafe(tmp_path, canary):
    path = tmp_path / "model.bin"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", _malicious(canary))
        archive.writestr("archive/data/0", os.urandom(4096))
        archive.writestr("archive/version", "3\n")

    result = _scan(path)

    assert result.status == "unsafe"
    assert result.scanned == ["model.bin!archive/data.pkl"]
    assert any(_is_system(f) and f.file == "model.bin!archive/data.pkl" for f in result.findings)


def _text(value: str) -> bytes:
    """BINUNICODE: a str pushed on the unpickler's stack."""
    encoded = value.encode()
    return b"X" + len(encoded).to_bytes(4, "little") + encoded


def _stack_global_eval(expression: str) -> bytes:
    """Protocol 4 by hand: STACK_GLOBAL builtins.eval, operands fetched back from the memo."""
    return b"".join(
        [
            b"\x80\x04",  # PROTO 4
            _text("builtins") + b"\x94",  # MEMOIZE as 0
            _text("eval") + b"\x94",  # MEMOIZE as 1
            b"00",  # POP both: the import below only sees them through the memo
            b"h\x00h\x01",  # BINGET 0, BINGET 1
            b"\x93",  # STACK_GLOBAL
            _text(expression),
            b"\x85",  # TUPLE1
            b"R",  # REDUCE
            b".",  # STOP
        ]
    )


def test_a_hand_written_stack_global_of_builtins_eval_is_unsafe(tmp_path, canary):
    data = _stack_global_eval(f"__import__('os').system('touch {canary}')")
    pickletools.dis(data, out=io.StringIO())  # well formed, checked without running it

    result = _scan(_write(tmp_path / "payload.pkl", data))

    assert result.status == "unsafe"
    [finding] = result.findings
    assert (finding.module, finding.name, finding.severity) == ("builtins", "eval", "unsafe")
    assert data[finding.offset] == 0x93


def test_a_stack_global_whose_name_is_computed_while_loading_is_unsafe(canary):
    # builtins.str("posix") would make the module name at load time: invisible in the bytes.
    module = b"cbuiltins\nstr\n" + _text("posix") + b"\x85R"
    command = _text(f"touch {canary}") + b"\x85R"
    data = b"\x80\x04" + module + _text("system") + b"\x93" + command + b"."
    pickletools.dis(data, out=io.StringIO())

    result = _scan_bytes("model.pkl", data)

    assert result.status == "unsafe"
    assert [f.severity for f in result.findings] == ["unsafe"]
    assert "computed" in result.findings[0].detail


def test_an_npy_file_with_an_object_array_that_calls_os_system_is_unsafe(tmp_path, canary):
    path = tmp_path / "array.npy"
    np.save(path, np.array([_System(f"touch {canary}"), 1], dtype=object), allow_pickle=True)

    result = _scan(path)

    assert result.status == "unsafe"
    assert any(_is_system(f) for f in result.findings)


def test_an_npz_member_with_an_object_array_is_unsafe(tmp_path, canary):
    path = tmp_path / "arrays.npz"
    np.savez(path, fine=np.arange(5.0), bad=np.array([_System(f"touch {canary}")], dtype=object))

    result = _scan(path)

    assert result.status == "unsafe"
    assert result.scanned == ["arrays.npz!bad.npy"]


def test_a_malicious_pickle_behind_a_harmless_one_in_the_same_file_is_unsafe(tmp_path, canary):
    data = pickle.dumps([1, 2, 3], protocol=2) + _malicious(canary, 2)

    result = _scan_bytes("model.pt", data)

    assert result.status == "unsafe"
    assert any(_is_system(f) for f in result.findings)


@pytest.mark.parametrize("compress", [3, ("gzip", 3), ("bz2", 3), ("xz", 3), ("lzma", 3)])
def test_a_compressed_joblib_dump_is_decompressed_and_scanned(tmp_path, canary, compress):
    path = tmp_path / "model.joblib"
    joblib.dump({"array": np.arange(1000.0), "hook": _System(f"touch {canary}")}, path, compress)

    result = _scan(path)

    assert result.status == "unsafe"
    assert any(_is_system(f) for f in result.findings)


def test_an_object_array_inside_a_joblib_dump_is_walked_as_a_nested_pickle(tmp_path, canary):
    path = tmp_path / "model.joblib"
    joblib.dump({"big": np.ones(10_000), "objects": np.array([_System(f"touch {canary}")])}, path)

    result = _scan(path)

    assert result.status == "unsafe"
    assert any(_is_system(f) for f in result.findings)


def test_a_protocol_0_pickle_with_a_text_extension_is_still_found(tmp_path, canary):
    data = f"cos\nsystem\n(S'touch {canary}'\ntR.".encode()
    pickletools.dis(data, out=io.StringIO())

    result = _scan_bytes("notes.txt", data)

    assert result.status == "unsafe"
    assert (result.findings[0].module, result.findings[0].name) == ("os", "system")


def test_python_2_names_are_judged_by_what_python_3_loads(canary):
    expression = f"__import__('os').system('touch {canary}')"
    result = _scan_bytes("old.pkl", f"c__builtin__\neval\n(V{expression}\ntR.".encode())

    assert result.status == "unsafe"
    assert result.findings[0].module == "__builtin__"


def test_an_attribute_walk_from_a_harmless_class_is_unsafe(tmp_path):
    data = b"\x80\x04\x8c\x08builtins\x8c\x15object.__subclasses__\x93)R."

    result = _scan_bytes("model.pkl", data)

    assert result.status == "unsafe"
    assert "__subclasses__" in result.findings[0].detail


def test_an_unknown_global_gives_a_warning():
    data = pickle.dumps(Path("/tmp/x"), protocol=4)  # pathlib: harmless but not allow-listed

    result = _scan_bytes("model.pkl", data)

    assert result.status == "warning"
    assert {f.severity for f in result.findings} == {"unknown"}


def test_findings_are_capped_per_file_without_dropping_the_unsafe_one():
    globals_ = b"".join(f"cmod{i}\nName{i}\n0".encode() for i in range(150))
    data = b"\x80\x02" + globals_ + b"cposix\nsystem\n."

    result = _scan_bytes("many.pkl", data)

    assert result.status == "unsafe"
    assert len(result.findings) == 100
    assert any(_is_system(f) for f in result.findings)


def test_a_global_named_from_a_memo_entry_dropped_to_save_memory_is_an_error(monkeypatch):
    fillers = b"".join(b"\x8c\x04" + word + b"\x94" for word in (b"aaaa", b"bbbb", b"cccc"))
    names = b"\x8c\x05posix\x94\x8c\x06system\x94"
    data = b"\x80\x04" + fillers + names + b"0" * 5 + b"h\x03h\x04\x93."
    pickletools.dis(data, out=io.StringIO())
    assert _scan_bytes("model.pkl", data).status == "unsafe"

    monkeypatch.setattr(pickles, "MAX_MEMO_WEIGHT", 200)  # room for the fillers only
    result = _scan_bytes("model.pkl", data)

    assert result.status == "error"
    assert "lost track" in result.findings[0].detail


def test_a_pickle_too_deep_to_follow_is_an_error(monkeypatch):
    monkeypatch.setattr(pickles, "MAX_STACK", 10)

    result = _scan_bytes("model.pkl", b"\x80\x04" + b"N" * 20 + b"0" * 19 + b".")

    assert result.status == "error"


# -- joblib's raw array bytes ----------------------------------------------------------------


class _NoTell(io.RawIOBase):
    """A sink without tell(): joblib then writes arrays with no alignment padding."""

    def __init__(self):
        self.data = io.BytesIO()

    def writable(self):
        return True

    def write(self, chunk):
        return self.data.write(chunk)

    def tell(self):
        raise io.UnsupportedOperation("no tell")


def test_arrays_of_every_kind_in_a_joblib_dump_are_stepped_over_exactly():
    arrays = {
        "bytes": np.array([b"ab", b"c\nd"], dtype="S3"),
        "structured": np.zeros((3, 4), dtype=[("x", "<f4"), ("y", "U3")]),
        "fortran": np.arange(6).reshape(2, 3).T,
        "big_endian": np.array([[1, 2]], dtype=">i4"),
        "empty": np.zeros((0, 5)),
        "scalar": np.array(3.5),
        "datetimes": np.array(["2020-01-01"], dtype="M8[D]"),
        "masked": np.ma.masked_array([1, 2], [0, 1]),
    }
    padded = io.BytesIO()
    joblib.dump(arrays, padded)
    unpadded = _NoTell()
    joblib.dump(arrays, unpadded)

    for data in (padded.getvalue(), unpadded.data.getvalue()):
        assert _scan_bytes("arrays.joblib", data).status == "clean"


def test_a_payload_only_pickle_load_would_read_from_joblib_array_bytes_is_found(canary):
    # Without padding, pickle.load reads the array's bytes as opcodes; joblib.load does not.
    payload = f"cposix\nsystem\n(Vtouch {canary}\ntR.".encode()
    sink = _NoTell()
    joblib.dump({"array": np.frombuffer(payload, dtype=np.uint8)}, sink)

    result = _scan_bytes("model.joblib", sink.data.getvalue())

    assert result.status == "unsafe"
    [finding] = result.findings
    assert _is_system(finding)
    assert "pickle.load" in finding.detail


def test_a_payload_hidden_in_joblib_padding_for_pickle_load_is_found(canary):
    # joblib.load skips as many padding bytes as the padding byte says; pickle.load reads
    # that byte as an opcode. 0x8c (SHORT_BINUNICODE) asks joblib to skip 140 bytes.
    marker = bytes(range(200, 232))
    buffer = io.BytesIO()
    joblib.dump({"array": np.frombuffer(marker, dtype=np.uint8)}, buffer)
    data = buffer.getvalue()
    start = data.index(marker)
    pad_at = next(i for i in range(start - 1, start - 18, -1) if data[i] != 0xFF)
    assert data[pad_at] == start - pad_at - 1  # joblib's padding length byte
    command = f"touch {canary}".encode()
    payload = b"\x05posix\x8c\x06system\x93\x8c" + bytes([len(command)]) + command + b"\x85R."
    padding = payload.ljust(0x8C, b"\xff")
    assert len(padding) == 0x8C
    tampered = data[:pad_at] + b"\x8c" + padding + data[start:]
    assert joblib.load(io.BytesIO(tampered))["array"].tobytes() == marker  # joblib: harmless

    result = _scan_bytes("model.joblib", tampered)

    assert result.status == "unsafe"
    [finding] = result.findings
    assert _is_system(finding)
    assert "pickle.load" in finding.detail


def test_a_joblib_dtype_that_contains_itself_is_an_error_not_a_crash():
    dtype = b"cnumpy\ndtype\n(" + _text("V8") + b"\x89\x88tRq\x00"  # memo 0: the dtype
    # Its state lists itself as the type of its only field.
    state = b"(K\x03" + _text("|") + b"N" + _text("a") + b"\x85}" + _text("a")
    state += b"h\x00K\x00\x86sK\x08K\x01K\x00tb"
    wrapper = b"cjoblib.numpy_pickle\nNumpyArrayWrapper\n)\x81}("
    wrapper += _text("shape") + b"K\x01\x85" + _text("dtype") + dtype + state + b"ub"
    data = b"\x80\x02" + wrapper + b"\x00" * 8 + b"."

    result = _scan_bytes("model.joblib", data)

    assert result.status == "error"
    assert "nested too deeply" in result.findings[0].detail


# -- clean samples ---------------------------------------------------------------------------


def test_scikit_learn_models_saved_with_joblib_and_pickle_are_clean(tmp_path):
    for index, model in enumerate(_models()):
        joblib.dump(model, tmp_path / f"plain{index}.joblib")
        joblib.dump(model, tmp_path / f"compressed{index}.joblib", compress=3)
        for protocol in (2, 4, 5):
            _write(tmp_path / f"model{index}_{protocol}.pkl", pickle.dumps(model, protocol))

    for path in sorted(tmp_path.iterdir()):
        result = _scan(path)
        assert (path.name, result.status, result.findings) == (path.name, "clean", [])
        assert result.scanned == [path.name]


def test_text_random_bytes_and_a_float_npy_file_are_clean(tmp_path):
    text = _write(tmp_path / "README.txt", b"Copyright (c) 2024\nSome notes\n")
    noise = _write(tmp_path / "noise.dat", random.Random(7).randbytes(64 * 1024))
    floats = tmp_path / "floats.npy"
    np.save(floats, np.arange(100.0))
    header = b'{"__metadata__":{}}'
    safetensors_like = _write(tmp_path / "weights.bin", len(header).to_bytes(8, "little") + header)

    for path in (text, noise, floats, safetensors_like):
        assert _scan(path) == ScanResult(status="clean", findings=[], scanned=[])


# -- broken samples --------------------------------------------------------------------------


def test_a_truncated_pickle_is_an_error(tmp_path):
    data = pickle.dumps(_models()[1], protocol=4)
    result = _scan(_write(tmp_path / "model.pkl", data[: len(data) // 2]))

    assert result.status == "error"
    assert [f.severity for f in result.findings] == ["error"]


def test_garbage_after_a_pickle_header_is_an_error():
    assert _scan_bytes("model.dat", b"\x80\x04\x00\x01\x02garbage").status == "error"


def test_a_file_with_a_pickle_extension_that_does_not_parse_is_an_error():
    assert _scan_bytes("model.pkl", random.Random(1).randbytes(1024)).status == "error"
    # Raw weights under a name PyTorch also uses are judged by their bytes: not a pickle.
    assert _scan_bytes("weights.bin", random.Random(1).randbytes(1024)).status == "clean"


def test_a_truncated_compressed_joblib_dump_is_an_error(tmp_path):
    path = tmp_path / "model.joblib"
    joblib.dump(_models()[1], path, compress=3)
    data = path.read_bytes()

    assert _scan_bytes("model.joblib", data[: len(data) // 2]).status == "error"


def test_a_damaged_zip_is_an_error():
    assert _scan_bytes("model.pt", b"PK\x03\x04" + b"\x00" * 100).status == "error"


# -- streams ---------------------------------------------------------------------------------


def test_an_unseekable_stream_gives_the_same_result_as_a_seekable_one(tmp_path, canary):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("archive/data.pkl", _malicious(canary))
        zipped.writestr("archive/data/0", os.urandom(1 << 20))
    joblib_dump = io.BytesIO()
    joblib.dump({"model": _models()[1], "weights": np.ones(300_000)}, joblib_dump)

    for name, data in (("model.pt", archive.getvalue()), ("model.joblib", joblib_dump.getvalue())):
        seekable = _scan_bytes(name, data)
        unseekable = _scan_bytes(name, data, seekable=False)
        assert unseekable == seekable
    assert _scan_bytes("model.pt", archive.getvalue()).status == "unsafe"
    assert _scan_bytes("model.joblib", joblib_dump.getvalue()).status == "clean"


_MEMORY_PROBE = textwrap.dedent(
    """
    import json, os, resource, sys
    import psutil
    from registry.scanner import scan_file

    def peak_rss():
        # ru_maxrss would include the forked parent's peak from before exec; VmHWM does not.
        if os.path.exists("/proc/self/status"):
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    class Unseekable:
        def __init__(self, path):
            self._file = open(path, "rb")
        def read(self, size=-1):
            return self._file.read(size)
        def close(self):
            self._file.close()

    baseline = psutil.Process().memory_info().rss
    report = {}
    for path in sys.argv[1:]:
        seekable = scan_file(path, lambda: open(path, "rb"))
        unseekable = scan_file(path, lambda: Unseekable(path))
        report[path] = [seekable.status, unseekable.status, len(seekable.findings)]
    heavy = {"django", "numpy", "joblib", "sklearn", "torch"}
    report["imported"] = sorted(name for name in sys.modules if name.split(".")[0] in heavy)
    report["baseline_mb"] = baseline / 2**20
    report["growth_mb"] = (peak_rss() - baseline) / 2**20
    print(json.dumps(report))
    """
)


def test_scanning_300_mb_array_pickles_keeps_memory_flat_and_imports_nothing(tmp_path):
    array = np.ones(300 * 2**20 // 8)
    pickled = tmp_path / "array.pkl"
    with open(pickled, "wb") as handle:
        pickle.dump(array, handle, protocol=5)
    dumped = tmp_path / "array.joblib"
    joblib.dump({"weights": array}, dumped)
    del array

    try:
        run = subprocess.run(
            [sys.executable, "-c", _MEMORY_PROBE, str(pickled), str(dumped)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        pickled.unlink()  # pytest keeps recent tmp dirs: do not leave 600 MB behind
        dumped.unlink()
    report = json.loads(run.stdout)
    print(
        f"scanning two 300 MB files: baseline RSS {report['baseline_mb']:.1f} MB, "
        f"peak growth {report['growth_mb']:.1f} MB"
    )

    assert report["imported"] == []  # bytes only: nothing named in the files got imported
    assert report[str(pickled)] == ["clean", "clean", 0]
    assert report[str(dumped)] == ["clean", "clean", 0]
    assert report["growth_mb"] < 100


# -- classification --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "name", "severity"),
    [
        ("posix", "system", "unsafe"),
        ("os.path", "join", "unsafe"),
        ("builtins", "getattr", "unsafe"),
        ("commands", "getoutput", "unsafe"),  # Python 2 name of subprocess
        ("functools", "partial", "unsafe"),
        ("torch.hub", "load", "unsafe"),
        ("numpy.testing._private.utils", "runstring", "unsafe"),
        ("dill._dill", "_load_type", "unsafe"),
        ("builtins", "object.__subclasses__", "unsafe"),
        ("numpy._core.multiarray", "_reconstruct", "safe"),
        ("numpy", "float32", "safe"),
        ("__builtin__", "object", "safe"),
        ("copy_reg", "_reconstructor", "safe"),
        ("sklearn.tree._tree", "Tree", "safe"),
        ("torch._utils", "_rebuild_tensor_v2", "safe"),
        ("torch", "FloatStorage", "safe"),
        ("scipy.sparse._csr", "csr_matrix", "safe"),
        ("sklearn.utils._testing", "TempMemmap", "unknown"),
        ("collections", "OrderedDict.fromkeys", "unknown"),
        ("joblib.numpy_pickle_compat", "NDArrayWrapper", "unknown"),
        ("xgboost.core", "Booster", "unknown"),
    ],
)
def test_imports_are_classified_by_name_alone(module, name, severity):
    assert policy.classify(module, name).severity == severity


# -- results ---------------------------------------------------------------------------------


def test_combine_keeps_the_worst_status_and_everything_found():
    finding = Finding("a.pkl", 2, "posix", "system", "unsafe", "imports posix.system")
    error = Finding("b.pkl", 9, "", "", "error", "unreadable pickle")
    results = [
        ScanResult("clean", [], ["c.pkl"]),
        ScanResult("error", [error], ["b.pkl"]),
        ScanResult("unsafe", [finding], ["a.pkl"]),
        ScanResult("warning", [], []),
    ]

    combined = combine(results)

    assert combined.status == "unsafe"
    assert combined.findings == [error, finding]
    assert combined.scanned == ["c.pkl", "b.pkl", "a.pkl"]
    assert combine([]).status == "clean"
    assert combine(results[:2]).status == "error"


def test_a_finding_converts_to_a_plain_dict():
    finding = Finding("m.bin!archive/data.pkl", 16, "posix", "system", "unsafe", "runs")

    assert finding.as_dict() == {
        "file": "m.bin!archive/data.pkl",
        "offset": 16,
        "module": "posix",
        "name": "system",
        "severity": "unsafe",
        "detail": "runs",
    }
