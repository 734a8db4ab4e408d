"""MLflow's artifact area: files uploaded before they become a version, and versions' files.

Artifact paths are a namespace of the blob store, never of a file system:
- `modelgate/<model>/<version>/<file>` is every version's files, read-only (the model's
  name as `registry.names.in_uri` writes it, or as it is);
- anything else is an `ArtifactFile` that a client uploaded (write-once: the same bytes
  again are accepted, other bytes under the same path are refused).

`resolve_source` turns a `create_model_version` source into blobs that are already in the
store; anything that could name a server path or another host is refused before any read.
"""

import posixpath
import re
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q

from registry.errors import Conflict, InvalidInput, NotFound, PermissionDenied, RegistryError
from registry.models import ArtifactFile, ModelVersion, RegisteredModel
from registry.names import from_uri
from registry.storage import BlobInfo, get_store, validate_file_path

from . import access, tracking, versions
from .events import record_event

VERSIONS_ROOT = "modelgate"


@dataclass(frozen=True)
class Entry:
    """One line of a listing: a name directly under the listed folder."""

    name: str
    is_dir: bool
    size: int | None = None


@dataclass(frozen=True)
class Blob:
    path: str
    sha256: str
    size: int
    uploaded_by_id: int | None = None


def clean_path(path: str, *, root_ok: bool = False) -> str:
    path = (path or "").strip("/")
    if not path:
        if root_ok:
            return ""
        raise InvalidInput("An artifact path is required.", {"path": path})
    return validate_file_path(path)


# --- version files, seen as artifacts ---------------------------------------------------


def _version_at(path: str, user) -> tuple[ModelVersion, str] | None:
    """(version, path inside it) for `modelgate/<model>/<n>[/...]`, None for other paths;
    NotFound unless `user` may read the model."""
    parts = path.split("/")
    if parts[0] != VERSIONS_ROOT or len(parts) < 3:
        return None
    name, number, rest = from_uri(parts[1]), parts[2], "/".join(parts[3:])
    if not (number.isascii() and number.isdigit()):
        raise NotFound(f"No artifacts at '{path}'.", {"path": path})
    version = (
        ModelVersion.objects.filter(model__name=name, number=int(number))
        .select_related("model")
        .first()
    )
    if version is None or not access.can(user, version.model, access.READ):
        raise NotFound(f"Version {number} of model '{name}' does not exist.", {"path": path})
    return version, rest


def _version_blobs(version: ModelVersion) -> list[Blob]:
    files = version.files.filter(complete=True).order_by("path")
    return [Blob(f.path, f.sha256, f.size, f.uploaded_by_id) for f in files]


def _visible(files, user):
    """Staged files are their writer's until a version takes them: others (admins aside)
    neither list nor read them, so nobody learns or copies what a colleague staged."""
    return files if access.is_admin(user) else files.filter(created_by_id=user.pk)


def _staged_blobs(prefix: str, user=None) -> list[Blob]:
    files = ArtifactFile.objects.filter(path__startswith=f"{prefix}/" if prefix else "")
    if user is not None:
        files = _visible(files, user)
    return [Blob(f.path, f.sha256, f.size, f.created_by_id) for f in files.order_by("path")]


def _staged_file(path: str) -> list[Blob]:
    files = ArtifactFile.objects.filter(path=path)
    return [Blob(f.path, f.sha256, f.size, f.created_by_id) for f in files]


def _under(blobs: list[Blob], prefix: str) -> list[Blob]:
    if not prefix:
        return blobs
    return [b for b in blobs if b.path == prefix or b.path.startswith(f"{prefix}/")]


def _listing(blobs: list[Blob], folder: str) -> list[Entry]:
    """Entries directly under `folder` (paths in `blobs` relative to the same root)."""
    entries: dict[str, Entry] = {}
    start = len(folder) + 1 if folder else 0
    for blob in blobs:
        if folder and not blob.path.startswith(f"{folder}/"):
            continue
        head, sep, _ = blob.path[start:].partition("/")
        entries[head] = Entry(head, True) if sep else Entry(head, False, blob.size)
    return sorted(entries.values(), key=lambda e: e.name)


def list_artifacts(path: str, user) -> list[Entry]:
    """What is directly under `path` that `user` may see; [] for a file or an empty folder."""
    path = clean_path(path, root_ok=True)
    in_versions_root = path.startswith(f"{VERSIONS_ROOT}/") and path.count("/") == 1
    if path in ("", VERSIONS_ROOT) or in_versions_root:
        return _root_listing(path, user)
    if tracking.is_tracking_path(path):  # a run's or logged model's: its readers list it
        try:
            tracking.artifact_origin(user, path)
        except NotFound:
            return []
        return _listing(_staged_blobs(path), path)
    found = _version_at(path, user)
    if found:
        version, inside = found
        return _listing(_version_blobs(version), inside)
    return _listing(_staged_blobs(path, user), path)


def _root_listing(path: str, user) -> list[Entry]:
    if path == "":
        staged = _listing(_staged_blobs("", user), "")
        return sorted([Entry(VERSIONS_ROOT, True), *staged], key=lambda e: e.name)
    if path == VERSIONS_ROOT:
        names = access.visible_models(user).order_by("name").values_list("name", flat=True)
        # MLflow's client decodes every listed path and refuses one holding '#' (one '?'
        # then cuts the URL it builds): such a model's versions stay reachable by their
        # download URI (names.in_uri), and the listing stays readable for everyone else.
        return [Entry(name, True) for name in names if "#" not in name and "?" not in name]
    name = from_uri(path.split("/")[1])
    readable = access.visible(user, ModelVersion.objects.filter(model__name=name))
    numbers = readable.order_by("number")
    return [Entry(str(n), True) for n in numbers.values_list("number", flat=True)]


def find_file(path: str, user) -> Blob:
    """The blob behind one artifact file, or NotFound (PermissionDenied: quarantined)."""
    path = clean_path(path)
    if tracking.is_tracking_path(path):
        tracking.artifact_origin(user, path)
        staged = ArtifactFile.objects.filter(path=path).first()
        if staged is not None:
            return Blob(posixpath.basename(staged.path), staged.sha256, staged.size)
        raise NotFound(f"Artifact '{path}' does not exist.", {"path": path})
    found = _version_at(path, user)
    if found:
        version, inside = found
        versions.require_downloadable(version, user, allow_quarantined=False)
        file = version.files.filter(path=inside, complete=True).first()
        if file is not None:
            return Blob(posixpath.basename(file.path), file.sha256, file.size)
    else:
        staged = _visible(ArtifactFile.objects.filter(path=path), user).first()
        if staged is not None:
            return Blob(posixpath.basename(staged.path), staged.sha256, staged.size)
    raise NotFound(f"Artifact '{path}' does not exist.", {"path": path})


def upload_artifact(user, path: str, stream: BinaryIO) -> ArtifactFile:
    """Store one file at `path`, streamed and hashed; the same bytes twice is a no-op.
    A run's or logged model's folder takes files from its creator only."""
    path = clean_path(path)
    in_tracking = tracking.is_tracking_path(path)
    if in_tracking:
        tracking.artifact_origin(user, path, access.WRITE)  # before reading a byte
    elif access.WRITE not in access.role_scopes(user):  # someone who may write to a model
        raise PermissionDenied("Your role does not allow uploading artifacts.")
    if path == VERSIONS_ROOT or path.startswith(f"{VERSIONS_ROOT}/"):
        raise PermissionDenied(
            f"'{VERSIONS_ROOT}/' holds registered versions and is read-only.", {"path": path}
        )
    if not in_tracking:
        _refuse_foreign_folder(user, path)  # before reading a byte
    info = get_store().put(stream, max_size=settings.MODELGATE_MAX_FILE_SIZE)
    try:
        with transaction.atomic():
            if not in_tracking:  # again: another writer may have won meanwhile
                _refuse_foreign_folder(user, path)
            _refuse_file_dir_clash(path)
            artifact = ArtifactFile.objects.create(
                path=path, size=info.size, sha256=info.sha256, created_by=user
            )
            record_event(
                "artifact.uploaded",
                user,
                data={"path": path, "size": info.size, "sha256": info.sha256},
            )
            return artifact
    except IntegrityError:
        existing = ArtifactFile.objects.get(path=path)
        if existing.sha256 == info.sha256:
            return existing  # a retried upload of the same bytes
        raise Conflict(
            f"Artifact '{path}' already exists with other content; artifacts are write-once.",
            {"path": path, "sha256": existing.sha256},
        ) from None


def _refuse_foreign_folder(user, path: str) -> None:
    """A folder belongs to whoever first wrote a file in it, with everything below it: no
    one else may write in it, below it, or in a folder above it (where a source naming
    the parent would take their files too). Root-level files claim no folder."""
    folder = posixpath.dirname(path)
    if not folder or access.is_admin(user):
        return
    parts = folder.split("/")
    above = ["/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]
    lines = Q(path__startswith=f"{folder}/")  # files in the folder or below it
    for ancestor in above[:-1]:  # files directly in a folder above it
        lines |= Q(path__regex=rf"^{re.escape(ancestor)}/[^/]+$")
    foreign = ArtifactFile.objects.filter(lines).exclude(created_by_id=user.pk)
    if foreign.exists():
        raise PermissionDenied(
            f"'{folder}/' belongs to another user's artifacts: write under a folder of your own.",
            {"path": path},
        )


def _refuse_file_dir_clash(path: str) -> None:
    parents = ["/".join(path.split("/")[:depth]) for depth in range(1, path.count("/") + 1)]
    if ArtifactFile.objects.filter(path__in=parents).exists() or (
        ArtifactFile.objects.filter(path__startswith=f"{path}/").exists()
    ):
        raise Conflict(f"'{path}' would be both a file and a folder.", {"path": path})


# --- create_model_version sources -------------------------------------------------------


def resolve_source(
    source: object, user, origin: "tracking.Origin | None" = None
) -> list[tuple[str, BlobInfo, int | None]]:
    """(path in the new version, blob, who uploaded it) for every file a source names, all
    already stored. Staged files must all be the caller's own (or the caller an admin).

    Accepted: `mlflow-artifacts:/<folder or file>` uploaded here, `mlflow-artifacts:/modelgate/
    <model>/<n>` and `models:/<model>/<n>` (an existing version's files), and a run's or
    logged model's files (`origin`, from `source_origin`). Refused before any lookup:
    other schemes (file:, http:, s3: ...), bare paths, hosts, `.`/`..` segments, queries
    and fragments.
    """
    if origin is None:
        origin = source_origin(source, user)
    if origin is not None:  # files its readers may take: their writer was its creator
        prefix = origin.prefix
        blobs = _staged_blobs(prefix) or _staged_file(prefix)
        return _stored(source, blobs, prefix)
    parts = urlsplit(source)
    if parts.scheme == "models":
        path = _source_path(source, parts)
        name, sep, number = path.rpartition("/")
        if not sep or not (number.isascii() and number.isdigit()):
            raise InvalidInput(
                "A models: source must be 'models:/<model>/<version number>' or "
                "'models:/m-<logged model id>'.",
                {"source": source},
            )
        path = f"{VERSIONS_ROOT}/{name}/{number}"
    elif parts.scheme == "mlflow-artifacts":
        path = _source_path(source, parts)
    else:
        raise InvalidInput(
            "'source' must be an mlflow-artifacts:/ folder uploaded to this server, "
            "models:/<model>/<version>, models:/m-<logged model id> or runs:/<run id>/<path>; "
            "server paths and other URLs are never read.",
            {"source": source},
        )
    found = _version_at(path, user)
    if found:
        version, prefix = found
        if version.state == ModelVersion.State.QUARANTINED:
            raise Conflict(
                f"Version {version.number} of '{version.model.name}' is quarantined: its "
                "files cannot be the source of another version.",
                {"source": source, "state": version.state},
            )
        blobs = _under(_version_blobs(version), prefix)
    else:
        prefix = path
        blobs = _staged_blobs(path) or _staged_file(path)
        foreign = [b.path for b in blobs if b.uploaded_by_id != user.pk]
        if foreign and not access.is_admin(user):
            raise PermissionDenied(
                f"'{source}' holds {len(foreign)} file(s) another user wrote; a version takes "
                "only files its creator uploaded.",
                {"source": source, "files": foreign[:20]},
            )
    return _stored(source, blobs, prefix)


def source_origin(source: object, user) -> "tracking.Origin | None":
    """The run or logged model whose files `source` names; None for other sources."""
    if not isinstance(source, str) or not source.strip():
        raise InvalidInput("'source' is required.", {"source": source})
    if "?" in source or "#" in source:
        raise InvalidInput("'source' may not carry a query or a fragment.", {"source": source})
    parts = urlsplit(source)
    if parts.scheme not in ("runs", "models", "mlflow-artifacts"):
        return None
    return tracking.source_origin(user, source, parts.scheme, _source_path(source, parts))


def _stored(source: str, blobs: list[Blob], prefix: str) -> list[tuple[str, BlobInfo, int | None]]:
    if not blobs:
        raise InvalidInput(f"No artifacts were uploaded under '{source}'.", {"source": source})
    store = get_store()
    missing = [b.path for b in blobs if not store.exists(b.sha256)]
    if missing:
        raise Conflict(f"Stored bytes are missing for {missing[0]!r}.", {"missing": missing})
    return [
        (_relative(b.path, prefix), BlobInfo(b.sha256, b.size), b.uploaded_by_id) for b in blobs
    ]


def _relative(path: str, prefix: str) -> str:
    if path == prefix:  # the source named one file: it becomes the version's only file
        return posixpath.basename(path)
    return path[len(prefix) + 1 :] if prefix else path


def _source_path(source: str, parts) -> str:
    if parts.netloc:
        raise InvalidInput(
            "'source' may not name a host: use mlflow-artifacts:/<path> on this server.",
            {"source": source},
        )
    try:
        return clean_path(parts.path)
    except InvalidInput as error:
        raise InvalidInput(f"Invalid 'source': {error.message}", {"source": source}) from None


def create_version_from_source(
    model: RegisteredModel, user, source: str, fields: dict
) -> ModelVersion:
    """A new version of `model` holding the files `source` names (no bytes are copied); from
    a run or a logged model, with their metrics, params and tags."""
    access.require_model(user, model, access.WRITE)
    try:
        origin = source_origin(source, user)
        found = resolve_source(source, user, origin)
        if origin is not None:  # a run feeds its version: metrics, params, tags, lineage
            fields = tracking.fed_fields(origin, fields)
        lineage = {**fields.pop("lineage", {}), "source": source}
        blobs = [(path, blob) for path, blob, _ in found]
        uploaders = {path: uploader for path, _, uploader in found}
        return versions.create_version_from_blobs(
            model, user, {**fields, "lineage": lineage}, blobs, uploaders=uploaders
        )
    except RegistryError:
        # log_model(registered_model_name=) made the model a moment ago for this version.
        if tracking.is_tracking_source(source):
            tracking.discard_unused_model(model, user)
        raise
