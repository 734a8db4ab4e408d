"""Sample model files for the scanner and the API end-to-end tests, built as bytes.

Everything here is harmless. A malicious sample's only effect, were it ever loaded, is to
create the canary file it is given (`touch <canary>`), so a test proves nothing ran by
asserting that the canary is still missing. Nothing here loads what it builds.

- `attack_routes(canary)`: the six routes of issue 15, one entry per sub-case;
- `bomb()`: a ~13 KB .bz2 expanding to ~360 MiB of pickle opcodes;
- `controls()`: whole clean versions (a scikit-learn joblib dump, a PyTorch-style zip
  checkpoint built without torch, safetensors, ONNX, tokenizer files);
- `torch_zip(size, path)` and `sklearn_joblib(size, path)`: big files for the benchmark,
  written without holding them in memory.
"""

from __future__ import annotations

import bz2
import io
import json
import pickle
import random
import shlex
import struct
import tarfile
import warnings
import zipfile
from pathlib import Path

# -- pickle opcodes, written by hand -----------------------------------------------------------


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(text: str) -> bytes:
    """BINUNICODE (protocol 1+), as torch's protocol 2 pickles write str."""
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def _tuple(*items: bytes) -> bytes:
    if not items:
        return b")"
    return b"(" + b"".join(items) + b"t"


def _call(func: bytes, *args: bytes) -> bytes:
    return func + _tuple(*args) + b"R"


def command(canary: Path) -> str:
    """The shell command every malicious sample runs: it only creates the canary."""
    return f"touch {shlex.quote(str(canary))}"


def _text_arg(text: str) -> bytes:
    """UNICODE (protocol 0): raw-unicode-escape up to a newline."""
    if "\n" in text or "\\" in text:
        raise ValueError("protocol 0 argument must not hold a newline or a backslash")
    return b"V" + text.encode("raw-unicode-escape") + b"\n"


def os_system_call(canary: Path) -> bytes:
    """The opcodes of os.system(<touch canary>), leaving its result on the stack (no STOP)."""
    return _global("os", "system") + b"(" + _text_arg(command(canary)) + b"tR"


def malicious_pickle(canary: Path) -> bytes:
    """A protocol 2 pickle of {"weights": [...], "hook": os.system(<touch canary>)}."""
    return (
        b"\x80\x02}("
        + _str("weights")
        + b"]("
        + b"G" + struct.pack(">d", 1.0)
        + b"G" + struct.pack(">d", 2.0)
        + b"e"
        + _str("hook")
        + os_system_call(canary)
        + b"u."
    )  # fmt: skip


# -- attack routes -------------------------------------------------------------------------


def _safetensors_lookalike(canary: Path) -> bytes:
    # PROTO 2, SHORT_BINSTRING 'meta{"format":"pt"}' (so bytes 8-9 are '{"'), POP, payload.
    text = b'meta{"format":"pt"}'
    data = b"\x80\x02U" + bytes([len(text)]) + text + b"0" + os_system_call(canary) + b"."
    assert data[8:10] == b'{"'
    return data


def _gguf_lookalike(canary: Path) -> bytes:
    # BINFLOAT eats "GUF" plus what reads as GGUF version 3 and a tensor count byte; POP.
    data = b"G" + b"GUF\x03\x00\x00\x00\x00" + b"0" + os_system_call(canary) + b"."
    assert data.startswith(b"GGUF\x03\x00\x00\x00")
    return data


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _legacy_torch_tar(canary: Path) -> bytes:
    """torch.save's oldest format (torch.load still reads it): a tar whose `pickle` member
    is unpickled with pickle.load."""
    sys_info = {
        "protocol_version": 1001,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 8},
    }
    return _tar(
        {
            "sys_info": pickle.dumps(sys_info, protocol=2),
            "pickle": malicious_pickle(canary),
            "storages": pickle.dumps(0, protocol=2),
            "tensors": pickle.dumps(0, protocol=2),
        }
    )


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = compression
            archive.writestr(info, data)
    return buffer.getvalue()


def attack_routes(canary: Path) -> dict[str, tuple[str, bytes]]:
    """Issue 15's routes, case name -> (file path in the version, bytes). Every case must
    scan `unsafe` or `unverified`; loading any of them would only create `canary`."""
    run = command(canary)
    clean_pickle = pickle.dumps({"step": 3}, protocol=2)
    return {
        # (1) a pickle that looks like safetensors (bytes 8-9 '{"') or starts with "GGUF"
        "safetensors-lookalike-pkl": ("model.pkl", _safetensors_lookalike(canary)),
        "gguf-prefix-pkl": ("model.pkl", _gguf_lookalike(canary)),
        # (2) a pickle under a weights name starting with PROTO 1, or with NEWTRUE
        "proto1-bin": ("pytorch_model.bin", b"\x80\x01" + os_system_call(canary) + b"."),
        "newtrue-pt": ("model.pt", b"\x880" + os_system_call(canary) + b"."),
        # (3) a zip member of any name holding a pickle
        "zip-member-model-bin": (
            "weights.zip",
            _zip({"archive/data.pkl": clean_pickle, "archive/model.bin": malicious_pickle(canary)}),
        ),
        # (4) a legacy tar-format torch.save file
        "legacy-torch-tar": ("model.pt", _legacy_torch_tar(canary)),
        # (5) standard-library calls that run commands
        "pydoc-pipepager": (
            "model.pkl",
            _call(_global("pydoc", "pipepager"), _text_arg("text"), _text_arg(run)) + b".",
        ),
        "imaplib-IMAP4_stream": (
            "model.pkl",
            _call(_global("imaplib", "IMAP4_stream"), _text_arg(run)) + b".",
        ),
        "pydoc-locate-os-system": (
            "model.pkl",
            _call(_global("pydoc", "locate"), _text_arg("os.system"))
            + b"("
            + _text_arg(run)
            + b"tR.",
        ),
        # (6) a decompression bomb
        "bz2-bomb": bomb(),
    }


_BOMB_STREAM: bytes | None = None
_BOMB_STREAM_OPCODES = 4_718_592  # NONE, POP pairs per bz2 stream: 9 MiB of opcodes
_BOMB_STREAMS = 40


def bomb() -> tuple[str, bytes]:
    """("model.pkl.bz2", ~14 KB): 40 concatenated bz2 streams (bzip2 and Python's bz2 read
    them as one) of 9 MiB each, PROTO 4 then NONE/POP pairs then NONE STOP: a valid, harmless
    pickle of 360 MiB whose walk would take minutes. Built in about a second."""
    global _BOMB_STREAM
    if _BOMB_STREAM is None:
        _BOMB_STREAM = bz2.compress(b"N0" * _BOMB_STREAM_OPCODES, 9)
    head = bz2.compress(b"\x80\x04", 9)
    tail = bz2.compress(b"N.", 9)
    return "model.pkl.bz2", head + _BOMB_STREAM * _BOMB_STREAMS + tail


# -- controls ------------------------------------------------------------------------------


def _sklearn_joblib() -> bytes:
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.RandomState(0)
    features = rng.rand(60, 4)
    labels = (features[:, 0] + features[:, 1] > 1).astype(int)
    buffer = io.BytesIO()
    joblib.dump(LogisticRegression().fit(features, labels), buffer)
    return buffer.getvalue()


_TORCH_DTYPES = {"FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "LongStorage": 8}


def _rebuild_tensor(key: str, storage_type: str, numel: int, shape: tuple[int, ...]) -> bytes:
    """torch._utils._rebuild_tensor_v2(storage, 0, shape, stride, False, OrderedDict()) with
    the storage as torch.save's persistent id ('storage', type, key, 'cpu', numel)."""
    stride = []
    step = 1
    for n in reversed(shape):
        stride.insert(0, step)
        step *= n
    storage = _tuple(_str("storage"), _global("torch", storage_type), _str(key), _str("cpu"),
                     _int(numel)) + b"Q"  # fmt: skip
    hooks = _call(_global("collections", "OrderedDict"))
    return _call(
        _global("torch._utils", "_rebuild_tensor_v2"),
        storage,
        _int(0),
        _tuple(*map(_int, shape)),
        _tuple(*map(_int, stride)),
        b"\x89",  # requires_grad False
        hooks,
    )


def _state_dict_pickle(tensors: list[tuple[str, str, str, tuple[int, ...]]]) -> bytes:
    """A state_dict as torch.save pickles it: an OrderedDict of tensors plus _metadata."""
    items = b"".join(
        _str(name) + _rebuild_tensor(key, storage_type, _numel(shape), shape)
        for name, key, storage_type, shape in tensors
    )
    metadata = _call(_global("collections", "OrderedDict")) + b"(" + _str("") + b"}("
    metadata += _str("version") + _int(1) + b"uu"
    state = b"}(" + _str("_metadata") + metadata + b"u"
    return (
        b"\x80\x02"
        + _call(_global("collections", "OrderedDict"))
        + b"("
        + items
        + b"u"
        + state
        + b"b."
    )


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for n in shape:
        count *= n
    return count


_ALIGNMENT = 64


def _aligned_info(name: str, offset: int, zip64: bool = False) -> zipfile.ZipInfo:
    """A stored ZipInfo whose data starts on a 64-byte boundary, padded with an extra field
    as torch's writer does."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    header = 30 + len(name.encode()) + 4 + (20 if zip64 else 0)
    pad = -(offset + header) % _ALIGNMENT
    info.extra = b"FB" + struct.pack("<H", pad) + b"\x00" * pad
    return info


def _torch_records(tensors, storages: dict[str, bytes]) -> list[tuple[str, bytes]]:
    records = [("archive/data.pkl", _state_dict_pickle(tensors))]
    records += [
        ("archive/.format_version", b"1"),
        ("archive/.storage_alignment", b"64"),
        ("archive/byteorder", b"little"),
    ]
    records += [(f"archive/data/{key}", data) for key, data in storages.items()]
    records += [
        ("archive/version", b"3\n"),
        ("archive/.data/serialization_id", b"1234567890123456789012345678901234567890"),
    ]
    return records


def _torch_zip() -> bytes:
    rnd = random.Random(15)
    weight = rnd.randbytes(4 * 8 * 4)
    # A storage whose float bytes happen to start like a pickle header (PROTO 2): raw
    # tensor data is data, whatever its first bytes.
    bias = b"\x80\x02" + rnd.randbytes(4 * 8 - 2)
    tensors = [("weight", "0", "FloatStorage", (8, 4)), ("bias", "1", "FloatStorage", (8,))]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in _torch_records(tensors, {"0": weight, "1": bias}):
            archive.writestr(_aligned_info(name, buffer.tell()), data)
    return buffer.getvalue()


def _safetensors(tensors: dict[str, tuple[str, tuple[int, ...], bytes]], metadata=None) -> bytes:
    header: dict = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(data for _, _, data in tensors.values())


def safetensors_file(
    tensors: dict[str, tuple[str, tuple[int, ...], bytes]], metadata=None
) -> bytes:
    """A safetensors file: {name: (dtype, shape, raw bytes)} laid out back to back."""
    return _safetensors(tensors, metadata)


def _onnx_model() -> bytes:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "W")
    bias = numpy_helper.from_array(np.ones(3, dtype=np.float32), "B")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["XW"]),
            helper.make_node("Add", ["XW", "B"], ["Y"]),
        ],
        "linear",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 3])],
        [weight, bias],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="modelgate-tests"
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _sentencepiece_model() -> bytes:
    """A sentencepiece-like ModelProto: repeated pieces (field 1: {1: piece, 2: score,
    3: type}) and a trainer spec (field 2). Opaque binary, not a pickle."""

    def field(number: int, wire: int, payload: bytes) -> bytes:
        return _varint(number << 3 | wire) + payload

    def length_delimited(number: int, payload: bytes) -> bytes:
        return field(number, 2, _varint(len(payload)) + payload)

    pieces = ["<unk>", "<s>", "</s>", "\u2581the", "\u2581cat", "\u2581car", "s", "ing", "\u2581c"]
    body = b""
    for index, piece in enumerate(pieces):
        kind = 2 if index == 0 else 3 if index < 3 else 1
        entry = length_delimited(1, piece.encode()) + field(2, 5, struct.pack("<f", -float(index)))
        entry += field(3, 0, _varint(kind))
        body += length_delimited(1, entry)
    trainer = length_delimited(1, b"corpus.txt") + field(3, 0, _varint(len(pieces)))
    return body + length_delimited(2, trainer)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tokenizer_json() -> bytes:
    vocab = {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "cat": 3, "car": 4, "cos": 5, "##s": 6}
    return json.dumps(
        {
            "version": "1.0",
            "added_tokens": [{"id": 0, "content": "[UNK]", "special": True}],
            "normalizer": {"type": "BertNormalizer", "lowercase": True},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "vocab": vocab},
        },
        indent=2,
    ).encode()


# Lines starting with "c" read as GLOBAL opcodes ("cat" / "car" is module / name): a walk
# of this file imports at.car and ow.cup, then fails at "f" (not an opcode), having called
# nothing. pickle.load would raise there without running anything: it must stay clean.
_VOCAB_TXT = b"cat\ncar\ncow\ncup\nfish\n[UNK]\n[CLS]\n.\n"


def controls() -> dict[str, dict[str, bytes]]:
    """Whole clean versions, case -> {path: bytes}. Each must scan `clean`."""
    tensor = struct.pack("<6f", *range(6))
    return {
        "sklearn-joblib": {
            "model.joblib": _sklearn_joblib(),
            "requirements.txt": b"scikit-learn\njoblib\n",
        },
        "torch-zip": {"model.pt": _torch_zip(), "config.json": b'{"hidden_size": 4}\n'},
        "safetensors": {
            "model.safetensors": _safetensors(
                {
                    "linear.weight": ("F32", (2, 3), tensor),
                    "linear.bias": ("F16", (2,), b"\x00\x3c" * 2),
                },
                metadata={"format": "pt"},
            ),
            "config.json": b'{"architectures": ["Linear"]}\n',
        },
        "onnx": {"model.onnx": _onnx_model()},
        "tokenizer": {
            "tokenizer.json": _tokenizer_json(),
            "tokenizer.model": _sentencepiece_model(),
            "vocab.txt": _VOCAB_TXT,
            "special_tokens_map.json": b'{"unk_token": "[UNK]"}',
        },
    }


# -- big files for the benchmark -------------------------------------------------------------

_PIECE = 1 << 20


def _noise(seed: int, size: int = 8 * _PIECE) -> bytes:
    return random.Random(seed).randbytes(size)


def torch_zip(size_bytes: int, path: Path) -> None:
    """Write a PyTorch-style zip checkpoint of about `size_bytes` to `path`: data.pkl plus
    stored (uncompressed) float32 storages of 64 MiB at most, streamed to disk."""
    storage_bytes = min(64 * _PIECE, max(4096, size_bytes // 16 // 4096 * 4096))
    count = max(1, size_bytes // storage_bytes)
    numel = storage_bytes // 4
    tensors = [
        (f"layers.{i}.weight", str(i), "FloatStorage", (numel // 1024, 1024)) for i in range(count)
    ]
    noise = _noise(1)
    with open(path, "wb") as handle, zipfile.ZipFile(handle, "w", allowZip64=True) as archive:
        placeholders = {str(i): b"" for i in range(count)}
        for name, data in _torch_records(tensors, placeholders):
            if not name.startswith("archive/data/"):
                archive.writestr(_aligned_info(name, handle.tell()), data)
                continue
            zip64 = storage_bytes * 1.05 > zipfile.ZIP64_LIMIT
            info = _aligned_info(name, handle.tell(), zip64)
            info.file_size = storage_bytes
            with archive.open(info, "w", force_zip64=zip64) as member:
                left = storage_bytes
                while left:
                    piece = noise[: min(left, len(noise))]
                    member.write(piece)
                    left -= len(piece)


def sklearn_joblib(size_bytes: int, path: Path) -> None:
    """Write a joblib dump of about `size_bytes`: a fitted MLPClassifier whose weight
    matrices are big float64 arrays (views of one 64 MiB buffer, so memory stays small)."""
    import joblib
    import numpy as np
    from sklearn.neural_network import MLPClassifier

    rng = np.random.RandomState(0)
    features = rng.rand(50, 8)
    labels = (features[:, 0] > 0.5).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it does not converge in 5 iterations: no matter
        model = MLPClassifier(hidden_layer_sizes=(4,), max_iter=5, random_state=0)
        model.fit(features, labels)
    columns = 1024
    rows = max(1, min(64 * _PIECE, size_bytes) // 8 // columns)
    buffer = rng.standard_normal((rows + 1) * columns)
    layers = max(1, size_bytes // (rows * columns * 8))
    # Distinct views (pickle would memoize one array written twice), each C-contiguous.
    model.coefs_ = [
        buffer[i % columns : i % columns + rows * columns].reshape(rows, columns)
        for i in range(layers)
    ]
    model.intercepts_ = [np.zeros(columns) for _ in range(layers)]
    joblib.dump(model, path)
