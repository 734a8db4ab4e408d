"""Classification of the globals a pickle imports: safe, unsafe or unverified.

A pickle can call anything it imports, so what it imports is what it can do. This is an
allow-list: a global is safe only when the allow-list below names it (names that only
rebuild data: containers, numpy arrays, scikit-learn estimators, xgboost/lightgbm boosters,
torch tensors). Every other global is a finding. The block-list only words the reason:
names that reach the operating system, the network, the import system or code execution
are "unsafe", the rest "unverified" ("not on the allow-list"). An operator may name more
unsafe globals (`extra_unsafe`). Names are matched as text: nothing here is ever imported.
"""

from __future__ import annotations

import _compat_pickle  # Python 2 -> 3 name tables the unpickler applies (data only)
import re
from dataclasses import dataclass

SAFE = "safe"
UNSAFE = "unsafe"
UNVERIFIED = "unverified"
UNKNOWN = UNVERIFIED  # the old name


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
    "numpy.ctypeslib": "loads native libraries",
    # Standard library modules with calls that run commands, load code or touch files.
    "pydoc": "runs pagers (shell commands) and imports any name (pydoc.locate)",
    "imaplib": "IMAP4_stream runs a shell command",
    "smtplib": _NETWORK,
    "ftplib": _NETWORK,
    "poplib": _NETWORK,
    "nntplib": _NETWORK,
    "telnetlib": _NETWORK,
    "xmlrpc": _NETWORK,
    "socketserver": _NETWORK,
    "ssl": _NETWORK,
    "select": "operating-system I/O",
    "selectors": "operating-system I/O",
    "mmap": "maps files into memory",
    "fcntl": _OS,
    "resource": _OS,
    "pwd": _OS,
    "grp": _OS,
    "platform": "runs commands to describe the system",
    "ctypes.util": "runs commands to find libraries",
    "idlelib": "the IDLE editor: runs code and subprocesses",
    "lib2to3": "rewrites and writes source files",
    "turtledemo": _RUNS_CODE,
    "tkinter": "opens windows and runs Tcl code",
    "_tkinter": "runs Tcl code",
    "turtle": "opens windows and runs Tcl code",
    "antigravity": "opens a web browser when imported",
    "ensurepip": "installs packages",
    "distutils": "builds and installs packages, runs compilers",
    "setuptools": "builds and installs packages, runs compilers",
    "pkg_resources": "loads entry points: imports and runs code",
    "venv": "creates environments and runs pip",
    "zipimport": "imports code from archives",
    "imp": "loads modules from source",
    "pkgutil": "imports arbitrary modules",
    "site": "runs .pth files and changes the import path",
    "sysconfig": "interpreter configuration",
    "builtins.__loader__": "imports modules",
    "threading": "runs functions in threads",
    "_thread": "runs functions in threads",
    "concurrent": "runs functions in threads and processes",
    "atexit": "runs functions at exit",
    "gc": "reaches every live object",
    "inspect": "reaches frames and source of live objects",
    "zipfile": "reads and writes files",
    "tarfile": "reads and writes files",
    "glob": "lists files",
    "fileinput": "reads files",
    "linecache": "reads files",
    "filecmp": "reads files",
    "pathlib": "reads and writes files",
    "sqlite3": "reads and writes files",
    "dbm": "reads and writes files",
    "logging": "writes files; logging.config can run code",
    "mailbox": "reads and writes files",
    "wsgiref": _NETWORK,
    "cgi": "runs code from the environment",
    "cgitb": "writes files",
    "msvcrt": _OS,
    "winreg": _OS,
    "_winreg": _OS,
    "_winapi": _OS,
    "yaml": "can load YAML that builds any object",
    "jsonpickle": "rebuilds arbitrary objects",
    "joblib.parallel": "runs functions in worker processes",
    "joblib.memory": "creates cache directories, runs cached functions",
    "joblib.externals": "vendored process pools and cloudpickle",
    "sklearn.utils.parallel": "runs functions in worker processes (joblib.Parallel)",
    "sklearn.utils._joblib": "re-exports joblib: Parallel, Memory, delayed",
    "torch.utils.bottleneck": "runs scripts under a profiler",
    "torch.utils.cpp_extension": "compiles and loads native code",
    "torch.utils.data": "starts worker processes",
    "torch._dynamo": "compiles and runs code",
    "torch._inductor": "compiles and runs code",
    "torch.compiler": "compiles and runs code",
    "torch.jit": "loads and runs TorchScript",
    "torch._jit_internal": "compiles TorchScript",
    "torch.fx": "generates and executes Python source (GraphModule)",
    "torch.package": "imports code packaged with the model",
    "torch.distributed": "runs remote calls and starts processes",
    "torch.multiprocessing": "starts processes",
    "torch._ops": "calls any registered operator",
    "torch.ops": "calls any registered operator",
    "torch._C": "native torch internals",
    "torch.backends": "changes global torch settings",
    "torch.testing": "test helpers",
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
    "help": "runs a pager (a shell command)",
    "exit": "exits the interpreter",
    "quit": "exits the interpreter",
    "__build_class__": "builds classes from code",
    "memoryview": "exposes raw memory",
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
    ("joblib", "Parallel"): "runs functions in worker processes",
    ("joblib", "Memory"): "creates cache directories, runs cached functions",
    ("joblib", "delayed"): "wraps functions for joblib.Parallel",
    ("operator", "call"): "calls any function",
    ("_operator", "call"): "calls any function",
    ("codecs", "open"): "opens files",
    ("uuid", "_get_command_stdout"): "runs commands",
    ("numpy.lib.format", "read_array"): _PICKLES,
    ("numpy.lib.format", "open_memmap"): "opens files",
    ("numpy", "memmap"): "opens files",
    ("numpy", "fromfile"): "reads files",
    ("numpy", "loadtxt"): "reads files",
    ("numpy", "genfromtxt"): "reads files",
    ("numpy", "save"): "writes files",
    ("numpy", "savez"): "writes files",
    ("numpy", "savetxt"): "writes files",
    ("torch", "save"): "writes files",
    ("torch", "from_file"): "reads files",
    ("torch.storage", "_load_from_bytes"): _PICKLES,
    ("torch.serialization", "_load"): _PICKLES,
    ("torch.serialization", "_legacy_load"): _PICKLES,
    ("torch.serialization", "save"): "writes files",
    ("scipy.io", "loadmat"): "reads files",
    ("scipy.io", "savemat"): "writes files",
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
    | {("torch._utils", name) for name in (
        "_rebuild_parameter_with_state", "_rebuild_qtensor", "_rebuild_sparse_tensor",
        "_rebuild_meta_tensor_no_storage", "_rebuild_device_tensor_from_numpy",
        "_rebuild_nested_tensor", "_rebuild_tensor_v3",
    )}
    | {("torch.storage", "TypedStorage"), ("torch", "Tensor"), ("torch._tensor", "Tensor")}
    | {("torch.nn.parameter", "Parameter"), ("torch.nn.parameter", "Buffer")}
    | {("torch.nn.parameter", "UninitializedParameter")}
    | {(module, name) for module in _BUILTIN_MODULES for name in (
        "Ellipsis", "NotImplemented", "NoneType",
    )}
    | {("numpy", "bool_"), ("numpy", "str_"), ("numpy", "bytes_")}
    | {("numpy.dtypes", f"{kind}DType") for kind in (
        "Bool", "Int8", "UInt8", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64",
        "Float16", "Float32", "Float64", "LongDouble", "Complex64", "Complex128",
        "Object", "Bytes", "Str", "Void", "DateTime64", "TimeDelta64",
    )}
    | {("scipy.sparse._base", "_spbase"), ("scipy.sparse", "_sparsetools")}
)  # fmt: skip

# Boosters rebuild their model with the library's own (native) model parser: data, as long
# as the rest of the pickle (their parameters) is allow-listed too.
_BOOSTERS = frozenset({
    ("xgboost.core", "Booster"), ("xgboost.sklearn", "XGBModel"),
    ("xgboost.sklearn", "XGBClassifier"), ("xgboost.sklearn", "XGBRegressor"),
    ("xgboost.sklearn", "XGBRanker"), ("xgboost.sklearn", "XGBRFClassifier"),
    ("xgboost.sklearn", "XGBRFRegressor"),
    ("lightgbm.basic", "Booster"), ("lightgbm.sklearn", "LGBMModel"),
    ("lightgbm.sklearn", "LGBMClassifier"), ("lightgbm.sklearn", "LGBMRegressor"),
    ("lightgbm.sklearn", "LGBMRanker"),
})  # fmt: skip

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
    "int", "long", "bool", "uint16", "uint32", "uint64", "complex32", "chalf",
    "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "qint8", "quint8",
    "qint32", "quint4x2", "strided", "sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr",
    "sparse_bsc", "_mkldnn", "per_tensor_affine", "per_channel_affine",
    "per_tensor_symmetric", "per_channel_symmetric", "preserve_format", "contiguous_format",
    "channels_last",
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
    "sklearn.utils.estimator_checks",  # runs test suites on estimators
    "sklearn.utils._mocking",
    "sklearn.utils.parallel",  # Parallel: calls the functions it is given
    "sklearn.utils._joblib",  # re-exports joblib.Parallel and joblib.Memory
    "sklearn.utils.fixes",  # compatibility shims re-exporting other libraries' names
    "sklearn.datasets",
    "sklearn.externals",
    "sklearn.conftest",
    "sklearn._build_utils",  # runs compilers
    "sklearn.__check_build",
    "sklearn._distributor_init",
    "sklearn.experimental",  # enable_* modules patch sklearn when imported
)
# Names defined elsewhere that sklearn modules import and so re-export: `sklearn.x.Memory`
# resolves to joblib.Memory, which creates directories when instantiated. A class named so
# is never taken as an sklearn estimator.
_SKLEARN_FOREIGN_NAMES = frozenset({
    "Parallel", "Memory", "Path", "PurePath", "Popen", "Thread", "Process", "Pool",
    "ThreadPoolExecutor", "ProcessPoolExecutor", "TemporaryDirectory", "NamedTemporaryFile",
    "SpooledTemporaryFile", "ZipFile", "TarFile", "HTTPConnection", "Request",
})  # fmt: skip
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
        foreign = name in _SKLEARN_FOREIGN_NAMES
        return not (excluded or tests or foreign) and _CLASS_NAME.fullmatch(name) is not None
    if _in_module(module, "torch.nn.modules") or module == "torch.nn.parameter":
        # Layers are rebuilt with copyreg and BUILD; Module.__setstate__ only sets attributes.
        return _CLASS_NAME.fullmatch(name) is not None and not name.startswith("__pyx")
    if (module, name) in _BOOSTERS:
        return True
    if _in_module(module, "scipy.sparse"):
        return _SPARSE_CLASS.fullmatch(name) is not None
    return False


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """The name Python 3 loads for a protocol 0-2 pickle written by Python 2."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[module, name]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _named_by(module: str, name: str, entries: frozenset[str]) -> str | None:
    """The operator's entry ("module" or "module.name") that names this global, if any."""
    full = f"{module}.{name}"
    for entry in entries:
        if full == entry or full.startswith(entry + ".") or module == entry:
            return entry
    return None


def classify(module: str, name: str, extra_unsafe: frozenset[str] = frozenset()) -> Verdict:
    """Classify one imported global, given as the pickle names it. `extra_unsafe` holds the
    operator's own unsafe names, "module.name" or "module" (with its submodules): they are
    checked first, before the allow-list."""
    mapped = _python3_name(module, name)
    # A Python 2 name only loads as its Python 3 counterpart, but either may be dangerous.
    candidates = {(module, name), mapped}
    for candidate in candidates:
        entry = _named_by(*candidate, extra_unsafe) if extra_unsafe else None
        if entry is not None:
            return Verdict(UNSAFE, f"named unsafe by the operator's policy ({entry})")
    for candidate in candidates:
        reason = _unsafe(*candidate)
        if reason is not None:
            return Verdict(UNSAFE, reason)
    if not all(part.isidentifier() for part in f"{mapped[0]}.{mapped[1]}".split(".")):
        return Verdict(UNVERIFIED, "not on the allow-list (not a Python identifier)")
    if _safe(*mapped):
        return Verdict(SAFE, "rebuilds data")
    return Verdict(UNVERIFIED, _NOTED_UNKNOWN.get(mapped, "not on the allow-list"))
