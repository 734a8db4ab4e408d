"""A deployable package of one version: a reproducible tar with the model's files, a manifest,
requirements, a serving entrypoint, a Dockerfile and Kubernetes manifests.

Reproducible means the same inputs give the same bytes: entries are sorted, and every
timestamp, owner and mode is fixed. Model files are streamed, never held in memory.
"""

import hashlib
import io
import json
import re
import tarfile
from contextlib import closing
from importlib import resources
from string import Template
from typing import BinaryIO

from .extract import FileRef, OpenBlob, merge_requirements

FORMAT = "modelgate-package/1"
CHUNK = 1024 * 1024
MTIME = 946684800  # 2000-01-01T00:00:00Z
# What serve.py imports for each framework it can serve.
SERVING_REQUIREMENTS = {
    "sklearn": ["joblib", "scikit-learn"],
    "onnx": ["onnxruntime", "numpy"],
}
# What serve.py needs whatever the framework: GET /metrics answers 501 without it.
SERVE_REQUIREMENTS = ["prometheus-client"]
# serve.py prefers a .skops file, loaded without unpickling, over a pickle of the same model.
SKOPS_REQUIREMENTS = ["skops"]
TEMPLATES = resources.files(__package__) / "templates"


def k8s_name(model: str) -> str:
    """A DNS-1035 label (what Service names need) derived from the model name."""
    name = re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if not name[:1].isalpha():
        name = f"model-{name}"
    return name[:63].rstrip("-")


class _ExactReader:
    """Hands tarfile a blob's bytes in full pieces, checking its size and sha256."""

    def __init__(self, stream: BinaryIO, ref: FileRef) -> None:
        self._stream = stream
        self._ref = ref
        self._hash = hashlib.sha256()

    def read(self, n: int) -> bytes:
        # tarfile treats a short read as the end of data: fill each piece completely.
        chunks, left = [], n
        while left > 0:
            chunk = self._stream.read(min(left, CHUNK))
            if not chunk:
                raise ValueError(f"{self._ref.path}: blob is shorter than {self._ref.size} bytes")
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        self._hash.update(data)
        return data

    def check_end(self) -> None:
        if self._stream.read(1):
            raise ValueError(f"{self._ref.path}: blob is longer than {self._ref.size} bytes")
        if self._hash.hexdigest() != self._ref.sha256.lower():
            raise ValueError(f"{self._ref.path}: blob does not match its sha256")


def _render(template: str, **values: str) -> bytes:
    return Template((TEMPLATES / template).read_text("utf-8")).substitute(values).encode()


def _requirements(meta: dict, files: list[FileRef]) -> list[str]:
    declared = [
        line.strip()
        for entry in meta.get("requirements") or []
        for line in str(entry).splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    framework = meta.get("framework") or ""
    loaders = list(SERVING_REQUIREMENTS.get(framework, []))
    if framework == "sklearn" and any(ref.path.lower().endswith(".skops") for ref in files):
        loaders += SKOPS_REQUIREMENTS
    return merge_requirements(declared, loaders, SERVE_REQUIREMENTS)


def _manifest(meta: dict, model: str, version: int, files: list[FileRef]) -> bytes:
    manifest = {
        "format": FORMAT,
        "model": model,
        "version": version,
        "files": [
            # serve.py checks the files under model/ against their sizes and sha256s, and
            # loads only a file whose scan verdict is "clean".
            {"path": ref.path, "size": ref.size, "sha256": ref.sha256, "scan": ref.scan}
            for ref in sorted(files, key=lambda ref: ref.path)
        ],
        "framework": meta.get("framework") or "",
        "signature": meta.get("signature"),
        "metrics": meta.get("metrics") or {},
        "params": meta.get("params") or {},
        "requirements": meta.get("requirements") or [],
        "created_at": meta.get("created_at"),
        "created_by": meta.get("created_by"),
    }
    return (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def _entries(meta: dict, files: list[FileRef]) -> dict[str, bytes | FileRef | None]:
    """Every entry of the package by name: bytes, a blob to stream, or None for a folder."""
    model, version = str(meta["model"]), int(meta["version"])
    if not model or "/" in model or model in {".", ".."}:
        raise ValueError(f"unusable model name {model!r}")
    top = f"{model}-{version}"
    name = k8s_name(model)
    requirements = _requirements(meta, files)
    entries: dict[str, bytes | FileRef | None] = {
        top: None,
        f"{top}/model": None,
        f"{top}/k8s": None,
        f"{top}/manifest.json": _manifest(meta, model, version, files),
        f"{top}/requirements.txt": "".join(f"{line}\n" for line in requirements).encode(),
        f"{top}/serve.py": (TEMPLATES / "serve.py").read_bytes(),
        f"{top}/Dockerfile": _render("Dockerfile", name=name, version=str(version)),
        f"{top}/k8s/deployment.yaml": _render("deployment.yaml", name=name, version=str(version)),
        f"{top}/k8s/service.yaml": _render("service.yaml", name=name, version=str(version)),
    }
    for ref in files:
        parts = ref.path.split("/")
        if ref.path.startswith("/") or any(part in {"", ".", ".."} for part in parts):
            raise ValueError(f"unsafe file path {ref.path!r}")
        for depth in range(1, len(parts)):
            folder = f"{top}/model/" + "/".join(parts[:depth])
            if entries.setdefault(folder, None) is not None:
                raise ValueError(f"{ref.path!r} needs a folder where there is a file")
        entry = f"{top}/model/{ref.path}"
        if entry in entries:
            raise ValueError(f"{ref.path!r} appears twice or is also a folder")
        entries[entry] = ref
    return entries


def _info(name: str, size: int, mode: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.type = size, mode, kind
    info.mtime, info.uid, info.gid, info.uname, info.gname = MTIME, 0, 0, "root", "root"
    return info


def build_package(meta: dict, files: list[FileRef], open_blob: OpenBlob, out: BinaryIO) -> None:
    """Write the version's package to `out` as an uncompressed tar, the same bytes every time.

    Raises ValueError when a blob's bytes do not match its FileRef; `out` then holds a
    partial tar and must be discarded.
    """
    entries = _entries(meta, files)
    # PAX format handles long names and files over 8 GiB; tarfile only adds pax records when a
    # field needs one, and never timestamps for integer mtimes. A big bufsize keeps
    # tarfile's stream buffer from re-copying each 1 MiB piece in small records.
    with tarfile.open(
        fileobj=out,
        mode="w|",
        format=tarfile.PAX_FORMAT,
        encoding="utf-8",
        bufsize=CHUNK,
        copybufsize=CHUNK,
    ) as tar:
        for name in sorted(entries):
            entry = entries[name]
            if entry is None:
                tar.addfile(_info(name, 0, 0o755, tarfile.DIRTYPE))
            elif isinstance(entry, bytes):
                # Generated files are never under model/, so this is the entrypoint.
                mode = 0o755 if name.endswith("/serve.py") else 0o644
                tar.addfile(_info(name, len(entry), mode), io.BytesIO(entry))
            else:
                with closing(open_blob(entry.sha256)) as stream:
                    reader = _ExactReader(stream, entry)
                    tar.addfile(_info(name, entry.size, 0o644), reader)
                    reader.check_end()
