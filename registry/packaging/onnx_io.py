"""Read an ONNX model's graph inputs, outputs and opsets straight from the protobuf wire format.

The file is walked once, front to back: weights (initializers, nodes) are skipped by length,
so memory stays small however big the model is, and the onnx package is not needed.
"""

from typing import BinaryIO

_READ_SIZE = 64 * 1024  # bytes asked of the stream at a time
_SKIP_SIZE = 1024 * 1024  # largest piece read and thrown away while skipping
_MAX_STRING = 64 * 1024  # longer names are cut: they only label the metadata
_MAX_VALUES = 1000  # inputs/outputs kept per list
_MAX_DIMS = 64

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5

ELEM_TYPES = {
    1: "float",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    8: "string",
    9: "bool",
    10: "float16",
    11: "double",
    12: "uint32",
    13: "uint64",
    14: "complex64",
    15: "complex128",
    16: "bfloat16",
}
# TypeProto's other value kinds, reported by name without a shape.
_OTHER_TYPES = {4: "sequence", 5: "map", 7: "opaque", 8: "sparse_tensor", 9: "optional"}


class OnnxFormatError(ValueError):
    """The bytes are not a well-formed ONNX ModelProto."""


class _Stream:
    """Bytes from a possibly unseekable stream, with the absolute position tracked."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._buf = b""
        self._i = 0
        self.pos = 0
        seekable = getattr(raw, "seekable", None)
        self._seekable = bool(seekable and seekable())

    def _refill(self) -> None:
        self._buf = self._raw.read(_READ_SIZE)
        self._i = 0
        if not self._buf:
            raise OnnxFormatError("truncated ONNX file")

    def byte(self) -> int:
        if self._i >= len(self._buf):
            self._refill()
        value = self._buf[self._i]
        self._i += 1
        self.pos += 1
        return value

    def read(self, n: int) -> bytes:
        parts = []
        while n > 0:
            if self._i >= len(self._buf):
                self._refill()
            part = self._buf[self._i : self._i + n]
            self._i += len(part)
            self.pos += len(part)
            n -= len(part)
            parts.append(part)
        return b"".join(parts)

    def skip(self, n: int) -> None:
        buffered = min(n, len(self._buf) - self._i)
        self._i += buffered
        self.pos += buffered
        n -= buffered
        if n and self._seekable:
            # Seeking past the end is allowed; the caller's end checks catch truncation.
            self._raw.seek(n, 1)
            self.pos += n
            return
        while n > 0:
            piece = self._raw.read(min(n, _SKIP_SIZE))
            if not piece:
                raise OnnxFormatError("truncated ONNX file")
            n -= len(piece)
            self.pos += len(piece)


def _varint(s: _Stream) -> int:
    result = 0
    for shift in range(0, 70, 7):
        byte = s.byte()
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result
    raise OnnxFormatError("varint too long")


def _int64(value: int) -> int:
    """Negative int64 values arrive as 10-byte two's complement varints."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _fields(s: _Stream, end: int):
    """Yield (field number, wire type) for each field until `end`; the caller consumes values."""
    while s.pos < end:
        key = _varint(s)
        yield key >> 3, key & 7
        if s.pos > end:
            raise OnnxFormatError("field runs past its message")
    if s.pos != end:
        raise OnnxFormatError("message runs past its length")


def _end_of(s: _Stream, end: int) -> int:
    """Read a length prefix; return where the length-delimited value ends."""
    length = _varint(s)
    value_end = s.pos + length
    if value_end > end:
        raise OnnxFormatError("length runs past the enclosing message")
    return value_end


def _skip(s: _Stream, wire: int, end: int) -> None:
    if wire == _VARINT:
        _varint(s)
    elif wire == _I64:
        s.skip(8)
    elif wire == _I32:
        s.skip(4)
    elif wire == _LEN:
        value_end = _end_of(s, end)
        s.skip(value_end - s.pos)
    else:
        raise OnnxFormatError(f"unsupported wire type {wire}")


def _string(s: _Stream, end: int) -> str:
    value_end = _end_of(s, end)
    data = s.read(min(value_end - s.pos, _MAX_STRING))
    s.skip(value_end - s.pos)
    return data.decode("utf-8", errors="replace")


def _message(s: _Stream, wire: int, end: int, parse, *args):
    """Parse a length-delimited submessage with `parse(s, end, *args)`."""
    if wire != _LEN:
        raise OnnxFormatError("expected a length-delimited message")
    return parse(s, _end_of(s, end), *args)


def _dimension(s: _Stream, end: int) -> int | str | None:
    dim: int | str | None = None
    for field, wire in _fields(s, end):
        if field == 1 and wire == _VARINT:
            dim = _int64(_varint(s))
        elif field == 2 and wire == _LEN:
            dim = _string(s, end)
        else:
            _skip(s, wire, end)
    return dim


def _shape(s: _Stream, end: int) -> list:
    dims = []
    for field, wire in _fields(s, end):
        if field == 1 and len(dims) < _MAX_DIMS:
            dims.append(_message(s, wire, end, _dimension))
        else:
            _skip(s, wire, end)
    return dims


def _tensor_type(s: _Stream, end: int, value: dict) -> None:
    for field, wire in _fields(s, end):
        if field == 1 and wire == _VARINT:
            elem = _varint(s)
            value["type"] = ELEM_TYPES.get(elem, f"elem_type_{elem}")
        elif field == 2:
            value["shape"] = _message(s, wire, end, _shape)
        else:
            _skip(s, wire, end)


def _type(s: _Stream, end: int, value: dict) -> None:
    for field, wire in _fields(s, end):
        if field == 1:
            _message(s, wire, end, _tensor_type, value)
        else:
            if field in _OTHER_TYPES:
                value["type"] = _OTHER_TYPES[field]
            _skip(s, wire, end)


def _value_info(s: _Stream, end: int) -> dict:
    # A tensor without a shape field has unknown rank: shape None, unlike [] for a scalar.
    value: dict = {"name": "", "type": None, "shape": None}
    for field, wire in _fields(s, end):
        if field == 1 and wire == _LEN:
            value["name"] = _string(s, end)
        elif field == 2:
            _message(s, wire, end, _type, value)
        else:
            _skip(s, wire, end)
    return value


def _tensor_name(s: _Stream, end: int) -> str:
    """An initializer's name; its data (raw_data, float_data, ...) is skipped unread."""
    name = ""
    for field, wire in _fields(s, end):
        if field == 8 and wire == _LEN:
            name = _string(s, end)
        else:
            _skip(s, wire, end)
    return name


def _graph(s: _Stream, end: int, info: dict) -> None:
    initializers = set()
    inputs, outputs = [], []
    for field, wire in _fields(s, end):
        if field == 5:
            initializers.add(_message(s, wire, end, _tensor_name))
        elif field == 11 and len(inputs) < _MAX_VALUES:
            inputs.append(_message(s, wire, end, _value_info))
        elif field == 12 and len(outputs) < _MAX_VALUES:
            outputs.append(_message(s, wire, end, _value_info))
        else:
            _skip(s, wire, end)
    # Files from before IR version 4 list every weight as a graph input too.
    info["inputs"] = [value for value in inputs if value["name"] not in initializers]
    info["outputs"] = outputs


def _opset(s: _Stream, end: int) -> dict:
    opset = {"domain": "", "version": None}
    for field, wire in _fields(s, end):
        if field == 1 and wire == _LEN:
            opset["domain"] = _string(s, end)
        elif field == 2 and wire == _VARINT:
            opset["version"] = _int64(_varint(s))
        else:
            _skip(s, wire, end)
    return opset


def read_onnx_info(stream: BinaryIO, size: int) -> dict:
    """Return {"ir_version", "producer", "opset", "inputs", "outputs"} of an ONNX model.

    `size` is the file's length in bytes. Raises OnnxFormatError (a ValueError) when the
    bytes are not an ONNX model with a graph.
    """
    s = _Stream(stream)
    info: dict = {"producer": "", "opset": []}
    for field, wire in _fields(s, size):
        if field == 1 and wire == _VARINT:
            info["ir_version"] = _varint(s)
        elif field == 2 and wire == _LEN:
            info["producer"] = _string(s, size)
        elif field == 7:
            _message(s, wire, size, _graph, info)
        elif field == 8 and len(info["opset"]) < _MAX_VALUES:
            info["opset"].append(_message(s, wire, size, _opset))
        else:
            _skip(s, wire, size)
    if "inputs" not in info:
        raise OnnxFormatError("no graph in the ONNX file")
    return info


# -- the scanner's reading: operator domains, external data, TensorFlow ops -----------------------

_MAX_DEPTH = 32  # subgraphs (If/Loop bodies) nested deeper than this are refused
_MAX_SEEN = 100_000  # distinct domains / locations / ops kept


def _bounded_add(values: set, value: str) -> None:
    if len(values) < _MAX_SEEN:
        values.add(value)


def _scan_entry(s: _Stream, end: int) -> tuple[str, str]:
    key = value = ""
    for field, wire in _fields(s, end):
        if field == 1 and wire == _LEN:
            key = _string(s, end)
        elif field == 2 and wire == _LEN:
            value = _string(s, end)
        else:
            _skip(s, wire, end)
    return key, value


def _scan_tensor(s: _Stream, end: int, found: dict) -> None:
    external = False
    locations = []
    for field, wire in _fields(s, end):
        if field == 13:
            key, value = _message(s, wire, end, _scan_entry)
            if key == "location":
                locations.append(value)
        elif field == 14 and wire == _VARINT:
            external = _varint(s) == 1
        else:
            _skip(s, wire, end)
    if external and not locations:
        locations.append("")
    for location in locations:
        if len(found["external"]) < _MAX_SEEN:
            found["external"].append(location)


def _scan_sparse(s: _Stream, end: int, found: dict) -> None:
    for field, wire in _fields(s, end):
        if field in (1, 2):
            _message(s, wire, end, _scan_tensor, found)
        else:
            _skip(s, wire, end)


def _scan_attribute(s: _Stream, end: int, found: dict, depth: int) -> None:
    for field, wire in _fields(s, end):
        if field in (5, 10):
            _message(s, wire, end, _scan_tensor, found)
        elif field in (6, 11):
            _message(s, wire, end, _scan_graph, found, depth + 1)
        elif field in (22, 23):
            _message(s, wire, end, _scan_sparse, found)
        else:
            _skip(s, wire, end)


def _scan_node(s: _Stream, end: int, found: dict, depth: int) -> None:
    domain, op = "", ""
    for field, wire in _fields(s, end):
        if field == 7 and wire == _LEN:
            domain = _string(s, end)
        elif field == 4 and wire == _LEN:
            op = _string(s, end)
        elif field == 5:
            _message(s, wire, end, _scan_attribute, found, depth)
        else:
            _skip(s, wire, end)
    if len(found["nodes"]) < _MAX_SEEN:
        found["nodes"].add((domain, op))


def _scan_graph(s: _Stream, end: int, found: dict, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise OnnxFormatError("subgraphs nested too deeply")
    for field, wire in _fields(s, end):
        if field == 1:
            _message(s, wire, end, _scan_node, found, depth)
        elif field == 5:
            _message(s, wire, end, _scan_tensor, found)
        elif field == 15:
            _message(s, wire, end, _scan_sparse, found)
        else:
            _skip(s, wire, end)


def _scan_function(s: _Stream, end: int, found: dict) -> None:
    name = domain = ""
    for field, wire in _fields(s, end):
        if field == 1 and wire == _LEN:
            name = _string(s, end)
        elif field == 10 and wire == _LEN:
            domain = _string(s, end)
        elif field == 7:
            _message(s, wire, end, _scan_node, found, 1)
        elif field == 9:
            _bounded_add(found["opsets"], _message(s, wire, end, _opset)["domain"])
        else:
            _skip(s, wire, end)
    found["functions"].add((domain, name))


def _scan_training(s: _Stream, end: int, found: dict) -> None:
    for field, wire in _fields(s, end):
        if field in (1, 3):
            _message(s, wire, end, _scan_graph, found, 1)
        else:
            _skip(s, wire, end)


def scan_onnx(stream: BinaryIO, size: int) -> dict:
    """Walk a whole ONNX ModelProto; weights are skipped by length.

    Returns {"custom_domains": operator domains used by nodes or imported (less those only
    serving the model's own functions), "external": the location of every tensor stored as
    external data}. Raises OnnxFormatError if the bytes are not a well-formed model."""
    s = _Stream(stream)
    found: dict = {"opsets": set(), "nodes": set(), "functions": set(), "external": []}
    graph = False
    for field, wire in _fields(s, size):
        if field == 1 and wire == _VARINT:
            _varint(s)
        elif field == 7:
            _message(s, wire, size, _scan_graph, found, 0)
            graph = True
        elif field == 8:
            _bounded_add(found["opsets"], _message(s, wire, size, _opset)["domain"])
        elif field == 25:
            _message(s, wire, size, _scan_function, found)
        elif field == 20:
            _message(s, wire, size, _scan_training, found)
        elif field in (2, 3, 4, 6, 14) and wire != _LEN:
            raise OnnxFormatError(f"field {field} has the wrong wire type")
        else:
            _skip(s, wire, size)
    if not graph:
        raise OnnxFormatError("no graph in the ONNX file")
    local = found["functions"]
    local_domains = {domain for domain, _ in local}
    domains = {domain for domain, op in found["nodes"] if (domain, op) not in local}
    domains |= found["opsets"] - local_domains
    return {"custom_domains": domains, "external": found["external"]}


def _tf_node(s: _Stream, end: int, ops: set) -> None:
    for field, wire in _fields(s, end):
        if field == 2 and wire == _LEN:
            _bounded_add(ops, _string(s, end))
        else:
            _skip(s, wire, end)


def _tf_function(s: _Stream, end: int, ops: set) -> None:
    for field, wire in _fields(s, end):
        if field == 3:
            _message(s, wire, end, _tf_node, ops)
        else:
            _skip(s, wire, end)


def _tf_library(s: _Stream, end: int, ops: set) -> None:
    for field, wire in _fields(s, end):
        if field == 1:
            _message(s, wire, end, _tf_function, ops)
        else:
            _skip(s, wire, end)


def _tf_graphdef(s: _Stream, end: int, ops: set) -> None:
    for field, wire in _fields(s, end):
        if field == 1:
            _message(s, wire, end, _tf_node, ops)
        elif field == 2:
            _message(s, wire, end, _tf_library, ops)
        else:
            _skip(s, wire, end)


def _tf_metagraph(s: _Stream, end: int, ops: set) -> None:
    for field, wire in _fields(s, end):
        if field == 2:
            _message(s, wire, end, _tf_graphdef, ops)
        else:
            _skip(s, wire, end)


def scan_tf_graph(stream: BinaryIO, size: int, *, saved_model: bool) -> set | None:
    """The op names of a TensorFlow SavedModel (saved_model.pb) or, failing that when not
    `saved_model`, of a bare GraphDef. None when the bytes are neither (only when not
    `saved_model`: a SavedModel that does not parse raises OnnxFormatError)."""
    s = _Stream(stream)
    ops: set = set()
    meta_graphs = 0
    try:
        for field, wire in _fields(s, size):
            if field == 1 and wire == _VARINT:
                _varint(s)
            elif field == 2:
                _message(s, wire, size, _tf_metagraph, ops)
                meta_graphs += 1
            else:
                _skip(s, wire, size)
    except OnnxFormatError:
        if saved_model:
            raise
        meta_graphs = 0
    if meta_graphs:
        return ops
    if saved_model:
        raise OnnxFormatError("no meta graph in the SavedModel")
    stream.seek(0)
    s = _Stream(stream)
    ops = set()
    try:
        _tf_graphdef(s, size, ops)
    except OnnxFormatError:
        return None
    return ops or None
