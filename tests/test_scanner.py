"""The model-file scanner: finds unsafe pickles by reading bytes, never by loading them.

Every sample is built here or in scan_payloads; malicious ones point their command at a
canary file that must still be missing after the scan, which proves nothing was executed.
"""

import io
import json
import os
import pickle
import pickletools
import random
import struct
import subprocess
import sys
import tarfile
import textwrap
import time
import zipfile
from fractions import Fraction
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from registry.scanner import (
    STATUSES,
    Finding,
    Limits,
    ScanResult,
    combine,
    formats,
    pickles,
    policy,
    scan_file,
)
from tests import scan_payloads

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
    assert result.files == {"model.pkl": {"status": "unsafe", "formats": ["pickle"]}}
    [finding] = [f for f in result.findings if _is_system(f)]
    assert finding.severity == "unsafe"
    assert (finding.file, finding.member) == ("model.pkl", "")
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
    assert result.files["model.bin"]["formats"] == ["pickle", "zip"]
    assert any(
        _is_system(f) and (f.file, f.member) == ("model.bin", "archive/data.pkl")
        for f in result.findings
    )


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
    assert {f.member for f in result.findings} == {"bad.npy"}


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


def test_an_unknown_global_is_unverified():
    data = pickle.dumps(Fraction(1, 3), protocol=4).replace(b"fractions", b"fractionz")
    data = b"\x80\x02cmypackage.layers\nBlock\n)R."  # a class nobody allow-listed

    result = _scan_bytes("model.pkl", data)

    assert result.status == "unverified"
    [finding] = result.findings
    assert (finding.module, finding.name, finding.severity) == (
        "mypackage.layers",
        "Block",
        "unverified",
    )
    assert "not on the allow-list" in finding.detail


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

    assert result.status == "unverified"
    assert "lost track" in result.findings[0].detail


def test_a_pickle_too_deep_to_follow_is_unverified(monkeypatch):
    monkeypatch.setattr(pickles, "MAX_STACK", 10)

    result = _scan_bytes("model.pkl", b"\x80\x04" + b"N" * 20 + b"0" * 19 + b".")

    assert result.status == "unverified"
    assert "too large, too deep" in result.findings[0].detail


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


def test_a_joblib_dtype_that_contains_itself_is_unverified_not_a_crash():
    dtype = b"cnumpy\ndtype\n(" + _text("V8") + b"\x89\x88tRq\x00"  # memo 0: the dtype
    # Its state lists itself as the type of its only field.
    state = b"(K\x03" + _text("|") + b"N" + _text("a") + b"\x85}" + _text("a")
    state += b"h\x00K\x00\x86sK\x08K\x01K\x00tb"
    wrapper = b"cjoblib.numpy_pickle\nNumpyArrayWrapper\n)\x81}("
    wrapper += _text("shape") + b"K\x01\x85" + _text("dtype") + dtype + state + b"ub"
    data = b"\x80\x02" + wrapper + b"\x00" * 8 + b"."

    result = _scan_bytes("model.joblib", data)

    assert result.status == "unverified"
    assert any("nested too deeply" in f.detail for f in result.findings)


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
        assert "pickle" in result.files[path.name]["formats"]


def test_text_random_bytes_and_a_float_npy_file_are_clean(tmp_path):
    text = _write(tmp_path / "README.txt", b"Copyright (c) 2024\nSome notes\n")
    noise = _write(tmp_path / "noise.dat", random.Random(7).randbytes(64 * 1024))
    floats = tmp_path / "floats.npy"
    np.save(floats, np.arange(100.0))
    header = b'{"__metadata__":{}}'
    safetensors_like = _write(tmp_path / "weights.bin", len(header).to_bytes(8, "little") + header)

    for path in (text, noise, floats, safetensors_like):
        result = _scan(path)
        assert (path.name, result.status, result.findings) == (path.name, "clean", [])
    assert _scan(text).files == {"README.txt": {"status": "clean", "formats": ["data"]}}
    assert _scan(floats).files["floats.npy"]["formats"] == ["npy"]
    assert _scan(safetensors_like).files["weights.bin"]["formats"] == ["safetensors"]


# -- broken samples --------------------------------------------------------------------------


def test_a_truncated_pickle_is_unverified(tmp_path):
    data = pickle.dumps(_models()[1], protocol=4)
    result = _scan(_write(tmp_path / "model.pkl", data[: len(data) // 2]))

    assert result.status == "unverified"
    assert all(f.severity == "unverified" for f in result.findings)
    assert any("not a valid pickle" in f.detail for f in result.findings)


def test_a_pickle_header_then_garbage_is_data_unless_it_goes_on_like_a_pickle():
    # PROTO then an invalid opcode at once: raw bytes that happen to start 0x80 0x04.
    assert _scan_bytes("model.dat", b"\x80\x04\x00\x01\x02garbage").status == "clean"
    # PROTO then ten opcodes before breaking: a broken pickle, whatever the name.
    broken = b"\x80\x04" + b"N" * 10 + b"\x00garbage"
    result = _scan_bytes("model.dat", broken)
    assert result.status == "unverified"
    assert "starts like a pickle" in result.findings[0].detail


def test_a_file_with_a_pickle_extension_that_does_not_parse_is_unverified():
    assert _scan_bytes("model.pkl", random.Random(1).randbytes(1024)).status == "unverified"
    # Raw weights under a name PyTorch also uses are judged by their bytes: not a pickle.
    assert _scan_bytes("weights.bin", random.Random(1).randbytes(1024)).status == "clean"


def test_a_truncated_compressed_joblib_dump_is_unverified(tmp_path):
    path = tmp_path / "model.joblib"
    joblib.dump(_models()[1], path, compress=3)
    data = path.read_bytes()

    result = _scan_bytes("model.joblib", data[: len(data) // 2])

    assert result.status == "unverified"
    assert any("truncated zlib stream" in f.detail for f in result.findings)


def test_a_damaged_zip_is_unverified():
    result = _scan_bytes("model.pt", b"PK\x03\x04" + b"\x00" * 100)

    assert result.status == "unverified"
    assert any("unreadable zip" in f.detail for f in result.findings)


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
        ("sklearn.utils._testing", "TempMemmap", "unverified"),
        ("collections", "OrderedDict.fromkeys", "unverified"),
        ("joblib.numpy_pickle_compat", "NDArrayWrapper", "unverified"),
        ("xgboost.core", "Booster", "safe"),
        ("lightgbm.sklearn", "LGBMClassifier", "safe"),
        ("torch.nn.modules.linear", "Linear", "safe"),
        ("pydoc", "pipepager", "unsafe"),
        ("pydoc", "locate", "unsafe"),
        ("imaplib", "IMAP4_stream", "unsafe"),
        ("idlelib.pyshell", "main", "unsafe"),
        ("lib2to3.main", "main", "unsafe"),
        ("ensurepip", "bootstrap", "unsafe"),
        ("distutils.spawn", "spawn", "unsafe"),
        ("setuptools.sandbox", "run_setup", "unsafe"),
        ("venv", "create", "unsafe"),
        ("zipimport", "zipimporter", "unsafe"),
        ("types", "CodeType", "unsafe"),
        ("torch.utils.bottleneck.__main__", "main", "unsafe"),
        ("torch._dynamo.eval_frame", "optimize", "unsafe"),
        ("torch.storage", "_load_from_bytes", "unsafe"),
        ("torch.fx.graph_module", "reduce_graph_module", "unsafe"),
        ("builtins", "help", "unsafe"),
        # sklearn names that are other libraries' classes, or run things: not estimators.
        ("sklearn.utils._joblib", "Memory", "unsafe"),
        ("sklearn.utils.parallel", "Parallel", "unsafe"),
        ("sklearn.pipeline", "Memory", "unverified"),
        ("sklearn.utils.estimator_checks", "_NotAnArray", "unverified"),
        ("sklearn._build_utils", "Extension", "unverified"),
        ("pathlib", "PosixPath", "unsafe"),
        ("mypackage", "not an identifier", "unverified"),
    ],
)
def test_imports_are_classified_by_name_alone(module, name, severity):
    assert policy.classify(module, name).severity == severity


# -- results ---------------------------------------------------------------------------------


def test_combine_keeps_the_worst_status_and_everything_found():
    finding = Finding("a.pkl", "", 2, "posix", "system", "unsafe", "imports posix.system")
    broken = Finding("b.pkl", "", 9, "", "", "unverified", "not a valid pickle")
    results = [
        ScanResult("clean", [], {"c.pkl": {"status": "clean", "formats": ["pickle"]}}),
        ScanResult("unverified", [broken], {"b.pkl": {"status": "unverified", "formats": []}}),
        ScanResult("unsafe", [finding], {"a.pkl": {"status": "unsafe", "formats": ["pickle"]}}),
    ]

    combined = combine(results)

    assert STATUSES == ("clean", "unsafe", "unverified")
    assert combined.status == "unsafe"
    assert combined.findings == [broken, finding]
    assert list(combined.files) == ["c.pkl", "b.pkl", "a.pkl"]
    assert combine([]).status == "clean"
    assert combine(results[:2]).status == "unverified"


def test_a_finding_converts_to_a_plain_dict():
    finding = Finding("m.bin", "archive/data.pkl", 16, "posix", "system", "unsafe", "runs")

    assert finding.as_dict() == {
        "file": "m.bin",
        "member": "archive/data.pkl",
        "offset": 16,
        "module": "posix",
        "name": "system",
        "severity": "unsafe",
        "detail": "runs",
    }


# -- issue 15: the six attack routes, the bomb and the controls --------------------------------


@pytest.mark.parametrize("case", sorted(scan_payloads.attack_routes(Path("/c"))))
def test_every_attack_route_ends_unsafe_or_unverified(tmp_path, canary, case):
    path, data = scan_payloads.attack_routes(canary)[case]
    for seekable in (True, False):
        result = _scan_bytes(path, data, seekable=seekable)
        assert result.status in ("unsafe", "unverified"), (case, result)
        assert result.files[path]["status"] == result.status
    if case != "bz2-bomb":
        assert result.status == "unsafe"  # each one imports a command runner
        assert any(f.severity == "unsafe" and f.module for f in result.findings)


@pytest.mark.parametrize("case", sorted(scan_payloads.controls()))
def test_every_control_version_is_clean(case):
    files = scan_payloads.controls()[case]
    results = [
        scan_file(path, lambda data=data: io.BytesIO(data), version_paths=frozenset(files))
        for path, data in files.items()
    ]

    combined = combine(results)

    assert (combined.status, combined.findings) == ("clean", [])
    assert set(combined.files) == set(files)


def test_the_bz2_bomb_ends_unverified_within_seconds_and_beats_its_lease():
    path, data = scan_payloads.bomb()
    assert 10_000 < len(data) < 20_000
    beats = []

    started = time.monotonic()
    result = scan_file(path, lambda: io.BytesIO(data), beat=lambda: beats.append(1))
    elapsed = time.monotonic() - started

    assert result.status == "unverified"
    assert elapsed < 5
    [finding] = result.findings
    assert "limit max_ratio" in finding.detail
    assert "200x" in finding.detail
    assert len(beats) >= 2


def test_the_controls_torch_zip_has_a_storage_that_starts_like_a_pickle():
    data = scan_payloads.controls()["torch-zip"]["model.pt"]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.read("archive/data/1")[:2] == b"\x80\x02"
        names = archive.namelist()
    assert "archive/data.pkl" in names and "archive/version" in names
    assert _scan_bytes("model.pt", data).status == "clean"


# -- bytes decide ------------------------------------------------------------------------------


def test_a_pickle_at_byte_0_that_is_also_a_zip_by_its_trailer_is_scanned_as_both(canary):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("inner.bin", _malicious(canary, 2))
    polyglot = pickle.dumps({"harmless": 1}, protocol=2) + archive.getvalue()

    result = _scan_bytes("weights.bin", polyglot)

    assert result.status == "unsafe"
    assert result.files["weights.bin"]["formats"] == ["pickle", "zip"]
    assert any(_is_system(f) and f.member == "inner.bin" for f in result.findings)


def test_archives_nest_with_any_member_names(canary):
    inner_tar = io.BytesIO()
    with tarfile.open(fileobj=inner_tar, mode="w:gz") as archive:
        info = tarfile.TarInfo("weights/blob")
        payload = _malicious(canary, 4)
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("bundle/part.dat", inner_tar.getvalue())

    result = _scan_bytes("bundle.zip", outer.getvalue())

    assert result.status == "unsafe"
    [finding] = [f for f in result.findings if _is_system(f)]
    assert finding.member == "bundle/part.dat!<gzip>!weights/blob"
    assert result.files["bundle.zip"]["formats"] == ["gzip", "pickle", "tar", "zip"]


def test_a_stored_storage_member_is_not_read_beyond_its_first_and_last_bytes():
    reads = []

    class Counting(io.BytesIO):
        def read(self, n=-1):
            data = super().read(n)
            reads.append(len(data))
            return data

    storage = random.Random(3).randbytes(32 * 2**20)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps([1, 2], protocol=2))
        archive.writestr("archive/data/0", storage)
    data = buffer.getvalue()

    result = scan_file("model.pt", lambda: Counting(data))

    assert result.status == "clean"
    assert sum(reads) < 2 * 2**20  # of 32 MiB


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("model.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{}", "runs past the end"),
        ("model.gguf", b"GGUF\x09\x00\x00\x00", "unsupported version"),
        ("model.onnx", b"\x08\x07\x12\x03abc", "not a valid ONNX"),
        ("model.pt", b"not a checkpoint at all", "not a valid pickle"),
        ("weights.npy", b"\x93NUMPY\x01\x00\x04\x00{'x'", "unreadable .npy header"),
        ("model.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 100, "HDF5 contents not inspected"),
        ("model.bin.gz", b"\x1f\x8b\x08\x00garbage", "gzip"),
        ("saved_model.pb", b"\xff\xff\xff", "not a valid TensorFlow SavedModel"),
    ],
)
def test_a_file_claiming_a_format_it_does_not_bear_out_is_unverified(name, data, reason):
    result = _scan_bytes(name, data)

    assert result.status == "unverified"
    assert any(reason in f.detail for f in result.findings), result.findings


# -- the walker is as lenient as the unpicklers --------------------------------------------------


def _loads_to(data: bytes) -> object:
    """Really unpickle a harmless pickle: proof that CPython's C unpickler reads it."""
    return pickle.loads(data)


@pytest.mark.parametrize(
    ("prefix", "loads_as"),
    [
        (b"I010\n", 8),  # strtol base 0: octal; int("010", 0) raises
        (b"I 12\n", 12),  # strtol skips leading whitespace
        (b"I12\x00junk\n", 12),  # strtol stops at the NUL
        (b"I\x00\n", 0),  # nothing converted, endptr at a NUL: C accepts it as 0
        (b"L12\x00\xffjunk\n", 12),  # PyLong_FromString on a C string; not UTF-8 after
        (b"F1.5\x00junk\n", 1.5),  # PyOS_string_to_double prefix, then a NUL
        (b"S'a'\np007\x00junk\n0g7\x00x\n", "a"),  # memo keys: base 10, up to a NUL
    ],
)
def test_text_arguments_the_c_unpickler_accepts_do_not_end_the_walk(canary, prefix, loads_as):
    assert _loads_to(prefix + b".") == loads_as
    data = prefix + b"0" + scan_payloads.os_system_call(canary) + b"."

    result = _scan_bytes("notes.txt", data)

    assert result.status == "unsafe"
    assert any(_is_system(f) for f in result.findings)


def test_a_global_whose_name_is_not_an_identifier_does_not_end_the_walk(canary):
    # find_class gets any text; the walker used to stop here and call the rest "not a pickle".
    data = b"cmy-package\nthe thing\n0" + scan_payloads.os_system_call(canary) + b"."

    result = _scan_bytes("notes.txt", data)

    assert result.status == "unsafe"
    assert any(_is_system(f) for f in result.findings)


def test_a_binstring_length_over_2_gib_is_unsigned_like_c(tmp_path, canary):
    # C reads BINSTRING's length unsigned; the walker read it signed and stopped.
    length = 2**31 + 16
    path = tmp_path / "sparse.dat"
    with open(path, "wb") as handle:
        handle.write(b"\x80\x02T" + struct.pack("<I", length))
        handle.seek(length, 1)  # a sparse file: nothing written, nothing read
        handle.write(b"0" + scan_payloads.os_system_call(canary) + b".")
    try:
        result = _scan(path)
    finally:
        path.unlink()

    assert result.status == "unsafe"
    assert any(_is_system(f) for f in result.findings)


# -- text that looks like pickle opcodes -------------------------------------------------------


def test_text_whose_lines_read_as_globals_is_clean_if_nothing_is_called():
    vocab = b"cat\ncar\ncow\ncup\nfish\n[UNK]\n"

    assert _scan_bytes("vocab.txt", vocab).status == "clean"


def test_an_unknown_global_called_before_the_walk_fails_still_counts():
    data = b"cmypackage\nhook\n(tRfish\n"  # imported, called (REDUCE), then not a pickle

    result = _scan_bytes("vocab.txt", data)

    assert result.status == "unverified"
    assert result.findings[0].name == "hook"


def test_a_dangerous_global_counts_even_if_the_walk_fails_before_calling_it():
    result = _scan_bytes("vocab.txt", b"cos\nsystem\nfish\n")

    assert result.status == "unsafe"


# -- validated formats -------------------------------------------------------------------------


def _st(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


@pytest.mark.parametrize(
    ("header", "data", "reason"),
    [
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, None),
        ({"a": {"dtype": "Q9", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "unknown dtype"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 12, "tile"),
        ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "match"),
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
            },
            b"\0" * 8,
            "overlaps",
        ),
        (
            {
                "a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},
                "b": {"dtype": "F16", "shape": [1], "data_offsets": [6, 8]},
            },
            b"\0" * 8,
            "gap",
        ),
        ({"__metadata__": {"x": 1}}, b"", "__metadata__"),
    ],
)
def test_safetensors_headers_are_parsed_fully(header, data, reason):
    result = _scan_bytes("model.safetensors", _st(header, data))

    if reason is None:
        assert (result.status, result.files["model.safetensors"]["formats"]) == (
            "clean",
            ["safetensors"],
        )
    else:
        assert result.status == "unverified"
        assert any(reason in f.detail for f in result.findings), result.findings


def _gguf(tensors: list[tuple[str, list[int], int, int]], data: bytes, kv: bytes = b"") -> bytes:
    def string(text: str) -> bytes:
        return struct.pack("<Q", len(text)) + text.encode()

    kvs = string("general.name") + struct.pack("<I", 8) + string("tiny") + kv
    body = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), 1 + (1 if kv else 0)) + kvs
    for name, shape, kind, offset in tensors:
        body += string(name) + struct.pack("<I", len(shape))
        body += b"".join(struct.pack("<Q", n) for n in shape) + struct.pack("<IQ", kind, offset)
    body += b"\0" * (-len(body) % 32)
    return body + data


def test_gguf_headers_are_parsed_and_tensors_must_lie_inside_the_file():
    good = _gguf([("w", [4, 2], 0, 0), ("b", [2], 1, 32)], b"\0" * 36)
    short = _gguf([("w", [4, 2], 0, 0), ("b", [64], 0, 32)], b"\0" * 36)
    strange = _gguf([("w", [4], 99, 0)], b"\0" * 16)

    assert _scan_bytes("model.gguf", good).files["model.gguf"] == {
        "status": "clean",
        "formats": ["gguf"],
    }
    assert "lies outside the file" in _scan_bytes("model.gguf", short).findings[0].detail
    assert "unknown type 99" in _scan_bytes("model.gguf", strange).findings[0].detail


def _onnx_model(domain: str = "", external: str | None = None) -> bytes:
    from onnx import TensorProto, helper

    weight = helper.make_tensor("W", TensorProto.FLOAT, [2], [1.0, 2.0])
    if external is not None:
        weight.ClearField("float_data")
        weight.data_location = TensorProto.EXTERNAL
        entry = weight.external_data.add()
        entry.key, entry.value = "location", external
    node = helper.make_node("Add" if not domain else "Gelu", ["X", "W"], ["Y"], domain=domain)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2])],
        [weight],
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def test_onnx_custom_operator_domains_are_unverified():
    assert _scan_bytes("m.onnx", _onnx_model("com.microsoft")).status == "clean"

    result = _scan_bytes("m.onnx", _onnx_model("ai.onnx.contrib"))

    assert result.status == "unverified"
    [finding] = result.findings
    assert "custom ONNX operator domain 'ai.onnx.contrib'" in finding.detail


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("weights.bin", None),
        ("../secrets.bin", "leaves the model's directory"),
        ("/etc/passwd", "absolute path"),
        ("missing.bin", "not a file of this version"),
    ],
)
def test_onnx_external_data_must_point_inside_the_version(location, reason):
    data = _onnx_model(external=location)
    paths = frozenset({"models/m.onnx", "models/weights.bin"})

    result = scan_file("models/m.onnx", lambda: io.BytesIO(data), version_paths=paths)

    if reason is None:
        assert result.status == "clean"
    else:
        assert result.status == "unverified"
        assert reason in result.findings[0].detail


def _keras(config: dict, name: str = "model.keras") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.4.1"}))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    return buffer.getvalue()


def _dense(**extra) -> dict:
    layer = {"module": "keras.layers", "class_name": "Dense", "config": {"name": "d", "units": 2}}
    return {**layer, **extra}


def _sequential(*layers: dict) -> dict:
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "s", "layers": list(layers)},
        "registered_name": None,
    }


def test_keras_archives_are_judged_by_their_config():
    lambda_layer = {
        "module": "keras.layers",
        "class_name": "Lambda",
        "config": {"name": "evil", "function": {"class_name": "__lambda__", "config": {}}},
    }
    custom = {"module": "my_layers", "class_name": "Fancy", "config": {"name": "f"}}
    registered = _dense(registered_name="MyPackage>Dense2")

    assert _scan_bytes("model.keras", _keras(_sequential(_dense()))).status == "clean"
    unsafe = _scan_bytes("model.keras", _keras(_sequential(_dense(), lambda_layer)))
    assert unsafe.status == "unsafe"
    assert "Lambda layer 'evil'" in unsafe.findings[0].detail
    assert unsafe.findings[0].member == "config.json"
    for layer, shown in ((custom, "my_layers"), (registered, "MyPackage>Dense2")):
        result = _scan_bytes("model.keras", _keras(_sequential(layer)))
        assert result.status == "unverified"
        assert shown in result.findings[0].detail


def test_hdf5_files_are_judged_by_their_keras_model_config():
    lambda_layer = {"class_name": "Lambda", "config": {"name": "evil", "function": ["4wEA"]}}
    config = json.dumps(
        {"class_name": "Sequential", "config": {"name": "s", "layers": [lambda_layer]}}
    ).encode()
    h5 = b"\x89HDF\r\n\x1a\n" + b"\0" * 200 + b"model_config\0\0\0" + config + b"\0" * 64

    result = _scan_bytes("model.h5", h5)

    assert result.status == "unsafe"
    assert result.files["model.h5"]["formats"] == ["hdf5", "keras"]
    clean = h5.replace(b'"Lambda"', b'"Dense"')
    assert _scan_bytes("model.h5", clean).status == "clean"


def _tf_saved_model(*ops: str) -> bytes:
    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2]) + scan_payloads._varint(len(payload)) + payload

    nodes = b"".join(field(1, field(1, op.lower().encode()) + field(2, op.encode())) for op in ops)
    return b"\x08\x01" + field(2, field(2, nodes))


def test_tensorflow_saved_models_with_file_or_python_ops_are_unsafe():
    assert _scan_bytes("saved_model.pb", _tf_saved_model("MatMul", "SaveV2")).status == "clean"

    result = _scan_bytes("saved_model.pb", _tf_saved_model("MatMul", "ReadFile", "PyFunc"))

    assert result.status == "unsafe"
    assert [f.detail.split()[2] for f in result.findings] == ["PyFunc", "ReadFile"]


def test_torchscript_archives_are_unverified():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model/code/__torch__/net.py", "def forward(self, x): return x\n")
        archive.writestr("model/data.pkl", pickle.dumps({}, protocol=2))

    result = _scan_bytes("model.pt", buffer.getvalue())

    assert result.status == "unverified"
    assert "TorchScript" in result.findings[0].detail


def test_a_legacy_torch_file_of_pickles_then_raw_storage_bytes_is_clean():
    pickles_ = b"".join(
        pickle.dumps(value, protocol=2)
        for value in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}, {"w": 1}, ["0"])
    )
    data = pickles_ + struct.pack("<q", 4) + random.Random(5).randbytes(16)

    assert _scan_bytes("model.pt", data).status == "clean"


# -- policy and limits -------------------------------------------------------------------------


def test_operator_named_globals_are_unsafe_before_the_allow_list():
    data = pickle.dumps(Fraction(1, 3), protocol=2)
    assert _scan_bytes("m.pkl", data).status == "clean"

    for entry in ("fractions", "fractions.Fraction"):
        result = scan_file("m.pkl", lambda: io.BytesIO(data), unsafe_globals=frozenset({entry}))
        assert result.status == "unsafe"
        assert "operator's policy" in result.findings[0].detail


def _nested_zips(levels: int, payload: bytes) -> bytes:
    data = payload
    for level in range(levels):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(f"level{level}.bin", data)
        data = buffer.getvalue()
    return data


def test_archives_nested_deeper_than_max_depth_are_unverified(canary):
    payload = _malicious(canary, 2)
    assert _scan_bytes("m.zip", _nested_zips(4, payload)).status == "unsafe"

    result = _scan_bytes("m.zip", _nested_zips(6, payload))

    assert result.status == "unverified"
    assert any("(limit max_depth)" in f.detail for f in result.findings)


def test_too_many_members_too_long_and_too_much_expanded_are_unverified():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for index in range(20):
            archive.writestr(f"m{index}", b"x" * 100_000)
    data = buffer.getvalue()

    def detail(limits: Limits) -> str:
        result = scan_file("m.zip", lambda: io.BytesIO(data), limits=limits)
        assert result.status == "unverified"
        return " ".join(f.detail for f in result.findings)

    assert "(limit max_members)" in detail(Limits(max_members=5))
    assert "(limit max_expanded_bytes)" in detail(Limits(max_expanded_bytes=500_000))
    assert "(limit max_ratio)" in detail(Limits(ratio_floor=1000, max_ratio=10))
    assert "(limit seconds_per_file)" in detail(Limits(seconds_per_file=0))
    assert scan_file("m.zip", lambda: io.BytesIO(data)).status == "clean"


def test_findings_name_the_member_and_the_proto_rule_for_raw_storage():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps([1], protocol=2))
        archive.writestr("archive/data/0", b"\x80\x02\x00\x00" + bytes(60))  # floats
        archive.writestr("archive/extra.pkl", b"\x80\x02\x00\x00" + bytes(60))  # claims

    result = _scan_bytes("model.pt", buffer.getvalue())

    assert result.status == "unverified"
    assert [f.member for f in result.findings] == ["archive/extra.pkl"]
    assert formats.PROTO_GRACE_OPCODES == 8


def test_zstd_streams_are_decompressed_and_scanned(canary):
    zstandard = pytest.importorskip("zstandard")
    data = zstandard.ZstdCompressor().compress(_malicious(canary, 4))

    result = _scan_bytes("model.pkl.zst", data)

    assert result.status == "unsafe"
    assert result.files["model.pkl.zst"]["formats"] == ["pickle", "zstd"]
    assert {f.member for f in result.findings if _is_system(f)} == {"model.pkl"}


def test_an_opcode_crossing_the_end_of_its_frame_is_unverified():
    # FRAME says 2 bytes, the BINBYTES inside it claims 4: C's unpickler, reading a file,
    # may run what follows as opcodes (cpython#154848), so the walk cannot vouch for it.
    data = b"\x80\x04\x95" + (2).to_bytes(8, "little") + b"B" + (4).to_bytes(4, "little")
    result = _scan_bytes("model.pkl", data + b"abcd" + b"N.")
    assert result.status == "unverified"
    assert "frame" in result.findings[0].detail
