"""Model versions: numbering, creation, finalization, resolution, archiving."""

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from registry.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from registry.models import Alias, ModelVersion, RegisteredModel, VersionFile
from registry.storage import BlobInfo, validate_file_path

from . import access, validation
from .environments import is_protected
from .events import record_event
from .locking import for_update
from .monitoring import baseline as monitoring_baseline
from .registered_models import get_model

State = ModelVersion.State
# What `latest` means, in the ORM and in the read path's SQL below.
LATEST = {"state": State.READY, "scan_status": "clean"}
METADATA_FIELDS = {"description", "metrics", "params", "tags", "lineage"}
METADATA_FIELDS |= {"baseline", "explanations"}  # monitoring, see services.monitoring.baseline


def parse_ref(ref: str | int) -> tuple[str, str | int | None]:
    """("number", n), ("latest", None) or ("alias", name) for a version reference."""
    ref = str(ref)
    if ref.isascii() and ref.isdigit():
        return "number", int(ref)
    if ref == "latest":
        return "latest", None
    if ref.startswith("@"):
        return "alias", ref[1:]
    raise InvalidInput(
        f"'{ref}' is not a version: use a number, '@alias' or 'latest'.", {"version": ref}
    )


def resolve_version(model: RegisteredModel, ref: str | int) -> ModelVersion:
    """A version by number, `@alias`, or `latest` (the newest ready version whose scan is
    clean: an unverified or quarantined version is never what `latest` fetches)."""
    ref = str(ref)
    kind, value = parse_ref(ref)
    versions = ModelVersion.objects.filter(model=model).select_related("model")
    if kind == "number":
        found = versions.filter(number=value).first()
    elif kind == "latest":
        found = versions.filter(**LATEST).order_by("-number").first()
    else:
        alias = Alias.objects.filter(model=model, name=value).select_related("version").first()
        found = alias.version if alias else None
        if alias:
            found.model = model
    if found is None:
        raise NotFound(
            f"Version '{ref}' of model '{model.name}' does not exist.",
            {"model": model.name, "version": ref},
        )
    return found


# What a version's detail shows (not the big internal JSON columns), in plain SQL: building
# and compiling the equivalent ORM query was half of the CPU time of the API's hottest
# endpoint. `raw()` still converts each column as the ORM does (JSON, datetimes).
_READ_SELECT = """
    SELECT v.id, v.model_id, v.created_by_id, v.number, v.state, v.status_reason,
           v.description, v.metrics, v.params, v.tags, v.created_at, v.updated_at,
           v.lineage, v.signature, v.framework, v.model_card, v.scan_status,
           v.scan_findings, v.scan_files, v.package_state, v.package_sha256, v.package_size,
           v.finalized_at, v.baseline, v.explanations,
           m.name AS model_name, m.team_id, m.visibility, u.username AS creator_name,
           (SELECT tm.role FROM registry_teammembership tm
            WHERE tm.team_id = m.team_id AND tm.user_id = %s) AS caller_role,
           (SELECT MAX(CASE g.level WHEN 'read' THEN 1 WHEN 'write' THEN 2 WHEN 'manage' THEN 3
                       END)
            FROM registry_modelgrant g
            WHERE g.model_id = m.id AND (g.user_id = %s OR g.team_id IN
                  (SELECT team_id FROM registry_teammembership WHERE user_id = %s))
           ) AS caller_grant
    FROM registry_modelversion v
    JOIN registry_registeredmodel m ON m.id = v.model_id
    LEFT JOIN auth_user u ON u.id = v.created_by_id
"""
_READ_BY = {
    "number": _READ_SELECT + "WHERE m.name = %s AND v.number = %s",
    # a.model_id = m.id lets Postgres find the alias by its (model, name) index.
    "alias": _READ_SELECT + "JOIN registry_alias a ON a.version_id = v.id AND a.model_id = m.id "
    "WHERE a.name = %s AND m.name = %s",
    "latest": _READ_SELECT + "WHERE m.name = %s AND v.state = 'ready' AND v.scan_status = 'clean' "
    "ORDER BY v.number DESC LIMIT 1",
}


# The version's alias names (kind 0) and files by path (kind 1) in one round trip, in plain
# SQL too: two ORM querysets cost more CPU than the rest of the request.
_READ_LISTS = """
    SELECT 0, name, NULL, NULL, NULL FROM registry_alias WHERE version_id = %s
    UNION ALL
    SELECT 1, path, size, sha256, complete FROM registry_versionfile WHERE version_id = %s
    ORDER BY 1, 2
"""


def read_version(user, name: str, ref: str | int) -> ModelVersion:
    """Version `ref` of model `name` as its detail shows it, if `user` may read it, in two
    small queries (the read path's hot spot) besides the access check: the version with its
    model and creator (other fields of those two are loaded on access), then `alias_names`
    and `file_rows` (path, size, sha256, complete) set on it. Errors as resolve_version's,
    and a 404 for a model the user may not read."""
    kind, value = parse_ref(ref)
    if kind == "number" and value > 2**31 - 1:  # beyond the column's range: no such version
        return resolve_version(get_model(user, name), ref)
    sql = _READ_BY[kind]
    params = {"number": [name, value], "latest": [name], "alias": [value, name]}[kind]
    caller = user.pk if access.active(user) else None
    found = next(iter(ModelVersion.objects.raw(sql, [caller] * 3 + params)), None)
    if found is None:
        # The model's own 404 if it is the model that is missing, else the version's.
        return resolve_version(get_model(user, name), ref)
    db = found._state.db
    found.model = RegisteredModel.from_db(
        db,
        ["id", "name", "team_id", "visibility"],
        [found.model_id, found.model_name, found.team_id, found.visibility],
    )
    found.model.caller_id = caller
    found.model.caller_role, found.model.caller_grant = found.caller_role, found.caller_grant
    access.require_model(user, found.model)
    if found.created_by_id is not None:
        user = (found.created_by_id, found.creator_name)
        found.created_by = get_user_model().from_db(db, ["id", "username"], user)
    with connection.cursor() as cursor:
        cursor.execute(_READ_LISTS, [found.pk, found.pk])
        rows = cursor.fetchall()
    found.alias_names = [row[1] for row in rows if row[0] == 0]
    # bool(): SQLite answers 0/1 for a boolean column.
    found.file_rows = [(p, size, sha, bool(done)) for kind, p, size, sha, done in rows if kind]
    return found


def _clean_metadata(data: dict[str, Any]) -> dict[str, Any]:
    unknown = set(data) - METADATA_FIELDS
    if unknown:
        raise InvalidInput(
            f"Unknown fields: {', '.join(sorted(unknown))}.",
            {"allowed": sorted(METADATA_FIELDS | {"files"})},
        )
    clean = {
        "description": validation.text(data.get("description"), "description"),
        "metrics": validation.metrics(data.get("metrics")),
        "params": validation.string_map(data.get("params"), "params"),
        "tags": validation.string_map(data.get("tags"), "tags"),
        "lineage": validation.lineage(data.get("lineage")),
    }
    validation.metadata_size(clean)
    return {
        **clean,
        "baseline": monitoring_baseline.clean_baseline(data.get("baseline")),
        "explanations": monitoring_baseline.clean_explanations(data.get("explanations")),
    }


def _clean_files(files: Any) -> list[dict[str, Any]]:
    if not isinstance(files, list) or not files:
        raise InvalidInput("'files' must be a non-empty list of {path, size, sha256}.")
    if len(files) > settings.MODELGATE_MAX_FILES_PER_VERSION:
        raise InvalidInput(
            f"A version holds at most {settings.MODELGATE_MAX_FILES_PER_VERSION} files."
        )
    cleaned, seen = [], set()
    for index, item in enumerate(files):
        if not isinstance(item, dict) or set(item) - {"path", "size", "sha256"}:
            raise InvalidInput(
                f"files[{index}] must be an object with path, size and sha256.", {"index": index}
            )
        path = validate_file_path(item.get("path"))
        if path in seen:
            raise InvalidInput(f"File '{path}' is listed twice.", {"path": path})
        seen.add(path)
        cleaned.append(
            {
                "path": path,
                "size": validation.size(item.get("size"), settings.MODELGATE_MAX_FILE_SIZE),
                "sha256": validation.sha256(item.get("sha256"), f"files[{index}].sha256"),
            }
        )
    _refuse_file_dir_clashes(seen)
    return cleaned


def _refuse_file_dir_clashes(paths: set[str]) -> None:
    # "a" and "a/b" cannot both exist once the version is written to a directory.
    for path in paths:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            if prefix in paths:
                raise InvalidInput(f"'{prefix}' is both a file and a folder.", {"path": prefix})


def _next_number(model: RegisteredModel) -> int:
    # The UPDATE takes the model's row lock, so concurrent creates get distinct numbers,
    # and a rolled-back create leaves a gap rather than a reused number.
    RegisteredModel.objects.filter(pk=model.pk).update(
        last_version_number=F("last_version_number") + 1
    )
    return RegisteredModel.objects.values_list("last_version_number", flat=True).get(pk=model.pk)


def _create(
    model: RegisteredModel,
    user,
    fields: dict,
    files: list[dict],
    stored: bool,
    uploaders: dict[str, int | None] | None = None,
) -> ModelVersion:
    """One numbered version and its files; `stored` when the bytes are already in the store.
    `uploaders` names who uploaded a file when it was not the version's creator."""
    uploaders = uploaders or {}
    with transaction.atomic():
        version = ModelVersion.objects.create(
            model=model,
            number=_next_number(model),
            created_by=user,
            state=State.PROCESSING if stored else State.UPLOADING,
            finalized_at=timezone.now() if stored else None,
            **fields,
        )
        VersionFile.objects.bulk_create(
            VersionFile(
                version=version,
                path=f["path"],
                size=f["size"],
                sha256=f["sha256"],
                received=f["size"] if stored else 0,
                complete=stored,
                uploaded_by_id=uploaders.get(f["path"], user.pk),
            )
            for f in files
        )
        record_event(
            "version.created",
            user,
            version=version,
            data={"files": len(files), "state": version.state},
        )
        if stored:
            _start_processing(version)
    return version


def create_version(model: RegisteredModel, user, data: dict[str, Any]) -> ModelVersion:
    """Declare a version and its files; the bytes follow with `receive_file`."""
    access.require_model(user, model, access.WRITE)
    data = dict(data)
    files = _clean_files(data.pop("files", None))
    return _create(model, user, _clean_metadata(data), files, stored=False)


def create_version_from_blobs(
    model: RegisteredModel,
    user,
    data: dict[str, Any],
    blobs: Iterable[tuple[str, BlobInfo]],
    uploaders: dict[str, int | None] | None = None,
) -> ModelVersion:
    """A version whose bytes are already in the store (the one-shot multipart upload, an
    MLflow source); `uploaders` as for _create."""
    access.require_model(user, model, access.WRITE)
    blobs = list(blobs)
    if not blobs:
        raise InvalidInput("At least one file is required.")
    files = _clean_files([{"path": p, "size": b.size, "sha256": b.sha256} for p, b in blobs])
    return _create(
        model, user, _clean_metadata(dict(data)), files, stored=True, uploaders=uploaders
    )


def finalize_version(version: ModelVersion, user) -> ModelVersion:
    access.require_model(user, version.model, access.WRITE)
    require_uploader(version, user)
    with transaction.atomic():
        version = for_update(ModelVersion).select_related("model").get(pk=version.pk)
        if version.state != State.UPLOADING:
            raise Conflict(
                f"Version {version.number} is already finalized ({version.state}).",
                {"state": version.state},
            )
        missing = list(version.files.filter(complete=False).values_list("path", flat=True)[:100])
        if missing:
            raise Conflict(
                f"{len(missing)} declared file(s) are not uploaded yet.", {"missing": missing}
            )
        version.state = State.PROCESSING
        version.finalized_at = timezone.now()
        version.save(update_fields=["state", "finalized_at", "updated_at"])
        record_event("version.finalized", user, version=version)
        _start_processing(version)
    return version


def update_version(version: ModelVersion, user, changes: dict[str, Any]) -> ModelVersion:
    """Only description and tags change; files and metrics of a version never do."""
    access.require_model(user, version.model, access.WRITE)
    unknown = set(changes) - {"description", "tags"}
    if unknown:
        raise InvalidInput(
            f"Only description and tags can be changed, not {', '.join(sorted(unknown))}.",
            {"fields": sorted(unknown)},
        )
    with transaction.atomic():
        version = for_update(ModelVersion).select_related("model").get(pk=version.pk)
        before, after = {}, {}
        for field, value in changes.items():
            value = (
                validation.text(value, field)
                if field == "description"
                else validation.string_map(value, field)
            )
            if getattr(version, field) != value:
                before[field], after[field] = getattr(version, field), value
                setattr(version, field, value)
        if after:
            validation.metadata_size({f: getattr(version, f) for f in validation.METADATA_FIELDS})
            version.save(update_fields=[*after, "updated_at"])
            record_event(
                "version.updated", user, version=version, data={"before": before, "after": after}
            )
    return version


def archive_version(version: ModelVersion, user) -> ModelVersion:
    access.require_model(user, version.model, access.WRITE)
    with transaction.atomic():
        version = for_update(ModelVersion).select_related("model").get(pk=version.pk)
        if version.state == State.ARCHIVED:
            return version
        aliases = list(version.aliases.values_list("name", flat=True))
        if aliases:
            envs = [a for a in aliases if is_protected(a)]
            what = "environment" if envs else "alias"
            raise Conflict(
                f"Version {version.number} is still the target of {what} "
                f"{', '.join(envs or aliases)}; move it first.",
                {"aliases": aliases},
            )
        before = version.state
        version.state = State.ARCHIVED
        version.save(update_fields=["state", "updated_at"])
        record_event("version.archived", user, version=version, data={"before": before})
    return version


def require_uploader(version: ModelVersion, user) -> None:
    if version.created_by_id != user.pk and not access.is_admin(user):
        raise PermissionDenied("Only the user who created this version may upload to it.")


# Processing --------------------------------------------------------------------------

PIPELINE_STEPS = ("verify", "scan", "extract", "package")


def _start_processing(version: ModelVersion) -> None:
    """Queue the worker pipeline, in the transaction that made the version `processing`."""
    from . import jobs

    ModelVersion.objects.filter(pk=version.pk).update(
        pipeline={step: "pending" for step in PIPELINE_STEPS}
    )
    jobs.enqueue("process_version", version.pk)


def mark_ready(version: ModelVersion) -> ModelVersion:
    with transaction.atomic():
        version = for_update(ModelVersion).select_related("model").get(pk=version.pk)
        if version.state != State.PROCESSING:
            return version  # already done by an earlier run of the same job
        version.state = State.READY
        version.status_reason = ""
        version.save(update_fields=["state", "status_reason", "updated_at"])
        record_event("version.ready", None, version=version)
    return version


def quarantine(version: ModelVersion, reason: str, actor=None) -> bool:
    """Put a processing or ready version in quarantine (an unsafe scan); False if it was
    already there or is in another state. Its aliases stay: moving an environment is a
    promotion's job, and downloads through them are refused from now on."""
    with transaction.atomic():
        version = for_update(ModelVersion).select_related("model").get(pk=version.pk)
        if version.state not in (State.PROCESSING, State.READY):
            return False
        before = version.state
        version.state = State.QUARANTINED
        version.status_reason = reason[:5000]
        version.save(update_fields=["state", "status_reason", "updated_at"])
        live = sorted(a for a in version.aliases.values_list("name", flat=True) if is_protected(a))
        record_event(
            "version.quarantined",
            actor,
            version=version,
            data={"reason": version.status_reason, "before": before, "live_in": live},
        )
    return True


def require_downloadable(version: ModelVersion, user, *, allow_quarantined: bool) -> None:
    """Refuse a quarantined version's bytes, but to an admin who asks explicitly; each such
    download is audited. Every door that serves a version's files calls this."""
    if version.state != State.QUARANTINED:
        return
    if not (allow_quarantined and access.is_admin(user)):
        raise PermissionDenied(
            f"Version {version.number} of '{version.model.name}' is quarantined: its scan "
            f"found a dangerous import ({version.status_reason or 'see its scan findings'}). "
            "Only an admin may download it, with allow_quarantined=true.",
            {"state": version.state, "scan": version.scan_status},
        )
    with transaction.atomic():
        record_event("version.quarantined_download", user, version=version)


def mark_failed(version: ModelVersion, reason: str) -> ModelVersion:
    with transaction.atomic():
        version = for_update(ModelVersion).select_related("model").get(pk=version.pk)
        if version.state != State.PROCESSING:
            return version
        version.state = State.FAILED
        version.status_reason = reason[:5000]
        version.save(update_fields=["state", "status_reason", "updated_at"])
        record_event(
            "version.failed", None, version=version, data={"reason": version.status_reason}
        )
    return version
