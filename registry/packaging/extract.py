"""Metadata found in a version's files: framework, signature, model card, requirements.

Only small text files are read whole (under a size cap); ONNX files are streamed through
onnx_io. Nothing here loads or unpickles a model: uploaded files are untrusted.
"""

import datetime
import json
import posixpath
import re
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass
from typing import Any, BinaryIO

import yaml

from .onnx_io import read_onnx_info


@dataclass(frozen=True)
class FileRef:
    path: str  # relative POSIX path inside the version, already validated
    size: int
    sha256: str
    # The file's scan verdict: "clean", "unsafe" or "unverified"; "" when not known. The
    # package's manifest carries it, and serve.py unpickles only "clean" files.
    scan: str = ""


OpenBlob = Callable[[str], BinaryIO]  # open_blob(sha256) -> readable binary stream

TEXT_CAP = 1024 * 1024  # MLmodel, requirements.txt, conda.yaml: bigger ones are skipped
MODEL_CARD_CAP = 256 * 1024  # a longer model card is cut
MAX_REQUIREMENTS = 500
_MAX_REQUIREMENT_LENGTH = 1000
_JSON_BUDGET = 100_000  # nodes copied out of a YAML document: YAML aliases can nest hugely

MODEL_CARDS = ("README.md", "MODEL_CARD.md")
# Monitoring files at the version's root, checked against their schemas by the caller.
MONITORING_FILES = {
    "baseline": "modelgate-baseline.json",
    "explanations": "modelgate-explanations.json",
}
MONITORING_CAP = 8 * 1024 * 1024
PICKLES = (".joblib", ".pkl", ".pickle")
# A project name, then the end or what may follow a name (so URLs and VCS lines have none).
_NAME = re.compile(r"([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:$|[\[<>=!~;@(,])")


def requirement_name(line: str) -> str | None:
    """The normalized project name of a requirement line (PEP 503), or None if it has none."""
    match = _NAME.match(line.strip())
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else None


def merge_requirements(*groups: Iterable[str]) -> list[str]:
    """Requirement lines in order, the first mention of each project winning."""
    merged, seen = [], set()
    for group in groups:
        for line in group:
            key = requirement_name(line) or line
            if key not in seen:
                seen.add(key)
                merged.append(line)
    return merged


def _requirement_lines(text: str) -> list[str]:
    lines = []
    for raw in text.splitlines():
        # pip treats "#" after whitespace as a comment; "#" inside URLs (egg fragments) stays.
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        # Options (-r, -c, --index-url) point at files or indexes a package does not carry.
        if line and not line.startswith("-") and len(line) <= _MAX_REQUIREMENT_LENGTH:
            lines.append(line)
    return lines


def _read(ref: FileRef, open_blob: OpenBlob, cap: int, *, cut: bool = False) -> bytes | None:
    """The file's bytes; None when it is over `cap` (or its first `cap` bytes if `cut`)."""
    if ref.size > cap and not cut:
        return None
    chunks, left = [], cap + 1
    with closing(open_blob(ref.sha256)) as stream:
        # Streams may return short reads before the end: keep reading up to the cap.
        while left > 0 and (chunk := stream.read(left)):
            chunks.append(chunk)
            left -= len(chunk)
    data = b"".join(chunks)
    if len(data) > cap:
        return data[:cap] if cut else None
    return data


def _load_yaml(ref: FileRef | None, open_blob: OpenBlob) -> Any:
    data = _read(ref, open_blob, TEXT_CAP) if ref else None
    if data is None:
        return None
    try:
        return yaml.safe_load(data.decode("utf-8", errors="replace"))
    except yaml.YAMLError:
        return None


def _json_copy(value: Any) -> Any:
    """A JSON-serializable copy of YAML data, or None when it is too large."""
    try:
        return _json_safe(value, [_JSON_BUDGET])
    except ValueError:
        return None


def _json_safe(value: Any, budget: list[int]) -> Any:
    """A JSON-serializable copy of YAML data; dates become ISO strings."""
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError("YAML data too large")
    if isinstance(value, dict):
        return {str(key): _json_safe(item, budget) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item, budget) for item in value]
    if isinstance(value, datetime.date):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _shallowest(files: Iterable[FileRef], match: Callable[[str], bool]) -> FileRef | None:
    found = [ref for ref in files if match(ref.path)]
    return min(found, key=lambda ref: (ref.path.count("/"), ref.path), default=None)


def _mlflow_signature(signature: Any) -> dict | None:
    """MLflow stores the signature's inputs/outputs as JSON strings inside the YAML."""
    if not isinstance(signature, dict):
        return None
    parsed = {}
    for key in ("inputs", "outputs"):
        value = signature.get(key)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                value = None
        parsed[key] = value if isinstance(value, list) else []
    return parsed


def _mlflow(mlmodel: dict, meta: dict) -> None:
    flavors = mlmodel.get("flavors")
    if isinstance(flavors, dict) and flavors:
        # python_function wraps every flavor; the other one names the framework.
        specific = [name for name in flavors if name != "python_function"]
        meta["framework"] = str((specific or list(flavors))[0])
    info = {
        key: mlmodel[key]
        for key in ("flavors", "run_id", "model_uuid", "utc_time_created", "mlflow_version")
        if key in mlmodel
    }
    info = _json_copy(info)
    if info:
        meta["mlflow"] = info
    signature = _json_copy(_mlflow_signature(mlmodel.get("signature")))
    if signature is not None:
        meta["signature"] = signature


def _conda_pip(conda: Any) -> list[str]:
    if not isinstance(conda, dict) or not isinstance(conda.get("dependencies"), list):
        return []
    for dependency in conda["dependencies"]:
        if isinstance(dependency, dict) and isinstance(dependency.get("pip"), list):
            lines = [line for line in dependency["pip"] if isinstance(line, str)]
            return _requirement_lines("\n".join(lines))
    return []


def _requirements_of(ref: FileRef | None, open_blob: OpenBlob) -> list[str]:
    data = _read(ref, open_blob, TEXT_CAP) if ref else None
    return _requirement_lines(data.decode("utf-8", errors="replace")) if data else []


def _onnx(ref: FileRef, open_blob: OpenBlob) -> dict | None:
    with closing(open_blob(ref.sha256)) as stream:
        try:
            return read_onnx_info(stream, ref.size)
        except ValueError:
            return None


def _guess_framework(files: list[FileRef], requirements: list[str]) -> str | None:
    paths = [ref.path.lower() for ref in files]
    if any(path.endswith(".onnx") for path in paths):
        return "onnx"
    names = {requirement_name(line) for line in requirements}
    if names & {"scikit-learn", "sklearn"} and any(path.endswith(PICKLES) for path in paths):
        return "sklearn"
    return None


def _monitoring(by_path: dict[str, FileRef], open_blob: OpenBlob, meta: dict) -> None:
    """The parsed monitoring files; what cannot be read goes to meta["problems"]."""
    for key, name in MONITORING_FILES.items():
        ref = by_path.get(name)
        if ref is None:
            continue
        data = _read(ref, open_blob, MONITORING_CAP)
        if data is None:
            meta.setdefault("problems", []).append(f"{name} is over {MONITORING_CAP} bytes.")
            continue
        try:
            meta[key] = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
        except ValueError as exc:  # UnicodeDecodeError is a ValueError too
            meta.setdefault("problems", []).append(f"{name} is not valid JSON: {exc}")


def _no_constant(name: str):
    raise ValueError(f"{name} is not allowed")


def extract_metadata(files: list[FileRef], open_blob: OpenBlob) -> dict:
    """Return the metadata keys found among framework, signature, model_card, requirements,
    mlflow, onnx, baseline and explanations (with "problems" for monitoring files that do
    not parse). Blobs that cannot be opened raise; other files that do not parse are skipped."""
    by_path = {ref.path: ref for ref in files}
    meta: dict = {}
    _monitoring(by_path, open_blob, meta)

    requirement_groups = [_requirements_of(by_path.get("requirements.txt"), open_blob)]
    mlmodel_ref = _shallowest(files, lambda path: posixpath.basename(path) == "MLmodel")
    if mlmodel_ref:
        folder = posixpath.dirname(mlmodel_ref.path)
        mlmodel = _load_yaml(mlmodel_ref, open_blob)
        if isinstance(mlmodel, dict):
            _mlflow(mlmodel, meta)
        if folder:  # at the root, requirements.txt was read above
            mlflow_requirements = by_path.get(posixpath.join(folder, "requirements.txt"))
            requirement_groups.append(_requirements_of(mlflow_requirements, open_blob))
        conda = _load_yaml(by_path.get(posixpath.join(folder, "conda.yaml")), open_blob)
        requirement_groups.append(_conda_pip(conda))
    requirements = merge_requirements(*requirement_groups)[:MAX_REQUIREMENTS]
    if requirements:
        meta["requirements"] = requirements

    for name in MODEL_CARDS:
        card = by_path.get(name)
        if card:
            data = _read(card, open_blob, MODEL_CARD_CAP, cut=True) or b""
            meta["model_card"] = data.decode("utf-8", errors="replace")
            break

    onnx_ref = _shallowest(files, lambda path: path.lower().endswith(".onnx"))
    onnx = _onnx(onnx_ref, open_blob) if onnx_ref else None
    if onnx:
        meta["onnx"] = onnx
        meta.setdefault("signature", {"inputs": onnx["inputs"], "outputs": onnx["outputs"]})

    if "framework" not in meta:
        framework = _guess_framework(files, requirements)
        if framework:
            meta["framework"] = framework
    return meta
