"""Classification of the globals a pickle imports: safe, unsafe or unknown.

A pickle can call anything it imports, so what it imports is what it can do. "unsafe" names
reach the operating system, the network, the import system or code execution; "safe" names
only rebuild data (containers, numpy arrays, scikit-learn estimators, torch tensors); all
else is "unknown". Names are matched as text: nothing named here is ever imported.
"""

from __future__ import annotations

import _compat_pickle  # Python 2 -> 3 name tables the unpickler applies (data only)
import re
from dataclasses import dataclass

SAFE = "safe"
UNSAFE = "unsafe"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Verdict:
    severity: str  # SAFE | UNSAFE | UNKNOWN
    reason: str


_OS = "operating-system access: files, processes, environment"
_RUNS_CODE = "runs Python code"
_NETWORK = "network access"
_PICKLES = "loads further pickles, unchecked"

# Any name in these modules or their submodules.
_UNSAFE_MODULES = {
    "os": _OS,
    "posix": _OS,
    "nt": _OS,
    "subprocess": "runs programs",
    "_posixsubprocess": "runs programs",
    "pty": "spawns processes",
    "multiprocessing": "starts processes",
    "signal": "changes signal handling",
    "sys": "interpreter internals: modules, hooks, exit",
    "socket": _NETWORK,
    "requests": _NETWORK,
    "urllib": _NETWORK,
    "http": _NETWORK,
    "asyncio": "runs subprocesses and network I/O",
    "webbrowser": "opens URLs",
    "shutil": "copies, moves and deletes files",
    "tempfile": "creates files",
    "io": "opens files",
    "_io": "opens files",
    "runpy": "runs Python modules and scripts",
    "code": _RUNS_CODE,
    "codeop": "compiles Python code",
    "timeit": _RUNS_CODE,
    "cProfile": _RUNS_CODE,
    "profile": _RUNS_CODE,
    "pdb": _RUNS_CODE,
    "bdb": _RUNS_CODE,
    "trace": _RUNS_CODE,
    "doctest": _RUNS_CODE,
    "types": "builds functions and code objects",
    "marshal": "loads code objects",
    "importlib": "imports arbitrary modules",
    "pip": "installs packages",
    "pickle": _PICKLES,
    "_pickle": _PICKLES,
    "shelve": _PICKLES,
    "dill": "rebuilds arbitrary functions and code",
    "cloudpickle": "rebuilds arbitrary functions and code",
    "ctypes": "calls native code",
    "_ctypes": "calls native code",
    "torch.hub": "downloads and runs code",
    "numpy.testing": "has helpers that run code strings",
    "numpy.f2py": "compiles and runs code",
    "numpy.distutils": "compiles and runs code",
}

_BUILTIN_MODULES = ("builtins", "__builtin__")

_UNSAFE_BUILTINS = {
    "eval": "evaluates Python code",
    "exec": "executes Python code",
    "compile": "compiles Python code",
    "open": "opens files",
    "getattr": "reaches any attribute of any object",
    "setattr": "changes attributes of any object",
    "delattr": "deletes attributes of any object",
    "__import__": "imports arbitrary modules",
    "globals": "reaches interpreter globals",
    "locals": "reaches interpreter locals",
    "vars": "reaches object namespaces",
    "input": "reads from the console",
    "breakpoint": "starts a debugger",
}

_UNSAFE_NAMES = {
    ("functools", "partial"): "calls any function with stored arguments",
    ("_functools", "partial"): "calls any function with stored arguments",
    ("operator", "attrgetter"): "reaches any attribute of any object",
    ("_operator", "attrgetter"): "reaches any attribute of any object",
    ("operator", "methodcaller"): "calls any method of any object",
    ("_operator", "methodcaller"): "calls any method of any object",
    ("pkgutil", "resolve_name"): "imports arbitrary names",
    ("torch", "load"): _PICKLES,
    ("torch.serialization", "load"): _PICKLES,
    ("torch.jit", "load"): "loads TorchScript programs",
    ("numpy", "load"): _PICKLES,
    ("numpy.lib.npyio", "load"): _PICKLES,
    ("numpy.lib._npyio_impl", "load"): _PICKLES,
    ("joblib", "load"): _PICKLES,
    ("joblib.numpy_pickle", "load"): _PICKLES,
}

# Attribute names whose appearance inside a dotted name (protocol 4 resolves "a.b.c" by
# walking attributes) means the pickle walks to something dangerous from a harmless start.
_DANGEROUS_ATTRIBUTES = {
    "os",
    "sys",
    "subprocess",
    "builtins",
    "system",
    "popen",
    "eval",
    "exec",
    "getattr",
    "__import__",
}

_NUMPY_CORE = ("numpy.core", "numpy._core")
_SAFE_NAMES = frozenset(
    {(module, name) for module in _BUILTIN_MODULES for name in (
        "object", "list", "dict", "set", "frozenset", "tuple", "bytearray", "bytes",
        "complex", "slice", "range", "int", "float", "str", "bool", "type",
    )}
    | {(module, "_reconstructor") for module in ("copyreg", "copy_reg")}
    | {(module, name) for module in ("copyreg", "copy_reg") for name in (
        "__newobj__", "__newobj_ex__",
    )}
    | {("collections", name) for name in ("OrderedDict", "defaultdict", "deque", "Counter")}
    | {("_codecs", "encode")}
    | {("datetime", name) for name in (
        "datetime", "date", "time", "timedelta", "timezone", "tzinfo",
    )}
    | {("decimal", "Decimal"), ("fractions", "Fraction"), ("uuid", "UUID"), ("uuid", "SafeUUID")}
    | {(f"{core}.multiarray", name) for core in _NUMPY_CORE for name in (
        "_reconstruct", "scalar", "ndarray", "dtype",
    )}
    | {(f"{core}.numeric", "_frombuffer") for core in _NUMPY_CORE}
    | {("numpy", name) for name in ("ndarray", "dtype", "matrix")}
    | {("numpy.ma.core", "_mareconstruct"), ("numpy.ma.core", "MaskedArray")}
    | {("numpy.ma", "MaskedArray")}
    | {("numpy.random._pickle", name) for name in (
        "__bit_generator_ctor", "__generator_ctor", "__randomstate_ctor",
    )}
    | {("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence")}
    | {("numpy.random.bit_generator", "SeedSequence")}
    | {("numpy.random.mtrand", "RandomState"), ("numpy.random._generator", "Generator")}
    | {(f"numpy.random._{module}", name) for module, name in (
        ("mt19937", "MT19937"), ("pcg64", "PCG64"), ("pcg64", "PCG64DXSM"),
        ("philox", "Philox"), ("sfc64", "SFC64"),
    )}
    | {("joblib.numpy_pickle", "NumpyArrayWrapper")}
    | {("sklearn.externals.joblib.numpy_pickle", "NumpyArrayWrapper")}
    | {(f"sklearn.neighbors._{tree}", "newObj") for tree in ("kd_tree", "ball_tree")}
    | {("torch._utils", name) for name in (
        "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter",
    )}
    | {("torch._tensor", "_rebuild_from_type_v2")}
    | {("torch.storage", "UntypedStorage"), ("torch", "device"), ("torch", "Size")}
)  # fmt: skip

# numpy's scalar types, e.g. the dtype=np.float32 parameter of an estimator.
# fmt: off
_NUMPY_SCALAR_TYPES = frozenset({
    "bool_", "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "intc", "uintc", "intp", "uintp", "int_", "uint", "longlong", "ulonglong", "short",
    "ushort", "byte", "ubyte", "half", "single", "double", "longdouble", "float16", "float32",
    "float64", "complex64", "complex128", "csingle", "cdouble", "clongdouble", "object_",
    "str_", "bytes_", "void", "datetime64", "timedelta64", "generic", "number", "integer",
    "signedinteger", "unsignedinteger", "inexact", "floating", "complexfloating", "character",
    "flexible",
})
_TORCH_DTYPES = frozenset({
    "float32", "float64", "float16", "bfloat16", "float", "double", "half", "complex64",
    "complex128", "cfloat", "cdouble", "uint8", "int8", "int16", "int32", "int64", "short",
    "int", "long", "bool",
})
# fmt: on

_NOTED_UNKNOWN = {
    ("joblib.numpy_pickle_compat", "NDArrayWrapper"): (
        "legacy joblib wrapper: loads a separate file with numpy.load(allow_pickle=True)"
    ),
    ("joblib.numpy_pickle_compat", "ZNDArrayWrapper"): (
        "legacy joblib wrapper: reads array data from a separate file"
    ),
}

# scikit-learn estimators are plain classes rebuilt with copyreg and BUILD. These parts of
# it do run things (test helpers running scripts, dataset downloaders, vendored code).
_SKLEARN_EXCLUDED = (
    "sklearn.utils._testing",
    "sklearn.utils._show_versions",
    "sklearn.datasets",
    "sklearn.externals",
    "sklearn.conftest",
)
_CLASS_NAME = re.compile(r"_?[A-Z]\w*|__pyx_unpickle_[A-Z_]\w*")
_SPARSE_CLASS = re.compile(r"(csr|csc|coo|bsr|dia|dok|lil)_(matrix|array)")


def _in_module(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _unsafe(module: str, name: str) -> str | None:
    """Why importing module.name is unsafe, or None."""
    for package, reason in _UNSAFE_MODULES.items():
        if _in_module(module, package):
            return reason
    parts = name.split(".")
    if module in _BUILTIN_MODULES and parts[0] in _UNSAFE_BUILTINS:
        return _UNSAFE_BUILTINS[parts[0]]
    if (module, name) in _UNSAFE_NAMES:
        return _UNSAFE_NAMES[module, name]
    for part in parts[1:]:
        if part.startswith("__") and part.endswith("__"):
            return f"walks into the special attribute {part}"
    for part in parts:
        if part in _DANGEROUS_ATTRIBUTES:
            return f"reaches {part} through another module"
    return None


def _safe(module: str, name: str) -> bool:
    if "." in name:
        return False  # attribute walks: never on the allow-list, whatever the start
    if (module, name) in _SAFE_NAMES:
        return True
    if module == "numpy":
        return name in _NUMPY_SCALAR_TYPES
    if module == "torch":
        return name in _TORCH_DTYPES or name.endswith("Storage")
    if _in_module(module, "sklearn"):
        excluded = any(_in_module(module, part) for part in _SKLEARN_EXCLUDED)
        tests = "tests" in module.split(".")
        return not excluded and not tests and _CLASS_NAME.fullmatch(name) is not None
    if _in_module(module, "scipy.sparse"):
        return _SPARSE_CLASS.fullmatch(name) is not None
    return False


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """The name Python 3 loads for a protocol 0-2 pickle written by Python 2."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[module, name]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def classify(module: str, name: str) -> Verdict:
    """Classify one imported global, given as the pickle names it."""
    mapped = _python3_name(module, name)
    # A Python 2 name only loads as its Python 3 counterpart, but either may be dangerous.
    for candidate in {(module, name), mapped}:
        reason = _unsafe(*candidate)
        if reason is not None:
            return Verdict(UNSAFE, reason)
    if _safe(*mapped):
        return Verdict(SAFE, "rebuilds data")
    return Verdict(UNKNOWN, _NOTED_UNKNOWN.get(mapped, "not on the allow-list"))
