"""Modelgate's models in MLflow's JSON shapes (mlflow/protos/model_registry.proto)."""

import contextlib
from contextvars import ContextVar
from datetime import datetime

from django.conf import settings
from django.urls import get_script_prefix

from registry.models import ModelVersion, RegisteredModel
from registry.names import in_uri
from registry.services.artifacts import VERSIONS_ROOT

STATUS = {
    ModelVersion.State.UPLOADING: "PENDING_REGISTRATION",
    ModelVersion.State.PROCESSING: "PENDING_REGISTRATION",
    ModelVersion.State.READY: "READY",
    ModelVersion.State.ARCHIVED: "READY",
    ModelVersion.State.FAILED: "FAILED_REGISTRATION",
    ModelVersion.State.QUARANTINED: "FAILED_REGISTRATION",
}


def millis(value: datetime | None) -> int | None:
    return int(value.timestamp() * 1000) if value else None


def tag_list(tags: dict) -> list[dict]:
    return [{"key": key, "value": value} for key, value in sorted((tags or {}).items())]


ARTIFACTS_PATH = "api/2.0/mlflow-artifacts/artifacts"
# The request being answered, for the server's address in the URIs it hands out.
_request: ContextVar = ContextVar("mlflow_request", default=None)


@contextlib.contextmanager
def answering(request):
    """Shapes built inside name the server as `request`'s client reached it."""
    token = _request.set(request)
    try:
        yield
    finally:
        _request.reset(token)


def public_url() -> str:
    """The server's base URL (no trailing slash): MODELGATE_PUBLIC_URL if set, else the
    request's scheme and Host (Django checks the Host against ALLOWED_HOSTS); "" outside
    a request."""
    if settings.MODELGATE_PUBLIC_URL:
        return settings.MODELGATE_PUBLIC_URL
    request = _request.get()
    return request.build_absolute_uri(get_script_prefix()).rstrip("/") if request else ""


def download_uri(version: ModelVersion) -> str:
    """Where MLflow downloads the version's files from, wherever its tracking URI points:
    an http(s) URL of the artifact proxy, which MLflow's HttpArtifactRepository lists and
    downloads with the registry's credentials (MLFLOW_TRACKING_TOKEN/USERNAME/PASSWORD).
    A host-less `mlflow-artifacts:/` URI would be resolved against the tracking URI, and
    fail when that is another server or a local store. The name's `%`, `#` and `?` are
    escaped (registry.names.in_uri): MLflow's client would cut the URL at them."""
    path = f"{VERSIONS_ROOT}/{in_uri(version.model.name)}/{version.number}"
    base = public_url()
    return f"{base}/{ARTIFACTS_PATH}/{path}" if base else f"mlflow-artifacts:/{path}"


def current_stage(version: ModelVersion, aliases: list[str] | None = None) -> str:
    """MLflow's stage vocabulary over Modelgate's environments of the same names."""
    if aliases is None:
        aliases = [alias.name for alias in version.aliases.all()]
    for environment in ("production", "staging"):
        if environment in aliases:
            return environment.capitalize()
    return "Archived" if version.state == ModelVersion.State.ARCHIVED else "None"


def _user(user) -> str:
    return user.get_username() if user is not None else ""


def model_version(version: ModelVersion, aliases: list[str] | None = None) -> dict:
    if aliases is None:
        aliases = sorted(alias.name for alias in version.aliases.all())  # uses a prefetch
    shape = {
        "name": version.model.name,
        "version": str(version.number),
        "creation_timestamp": millis(version.created_at),
        "last_updated_timestamp": millis(version.updated_at),
        "user_id": _user(version.created_by),
        "current_stage": current_stage(version, aliases),
        "description": version.description,
        "source": (version.lineage or {}).get("source") or download_uri(version),
        "run_id": str((version.lineage or {}).get("run_id") or ""),
        "status": STATUS.get(version.state, "READY"),
        "tags": tag_list(version.tags),
        "aliases": aliases,
    }
    if version.status_reason:
        shape["status_message"] = version.status_reason
    return shape


def latest_version(model: RegisteredModel) -> ModelVersion | None:
    return (
        model.versions.exclude(
            state__in=[ModelVersion.State.ARCHIVED, ModelVersion.State.QUARANTINED]
        )
        .select_related("model", "created_by")
        .order_by("-number")
        .first()
    )


def registered_model(model: RegisteredModel, *, with_latest: bool = True) -> dict:
    aliases = list(model.aliases.select_related("version").order_by("name"))
    shape = {
        "name": model.name,
        "creation_timestamp": millis(model.created_at),
        "last_updated_timestamp": millis(model.updated_at),
        "user_id": _user(model.created_by),
        "description": model.description,
        "tags": tag_list(model.tags),
        "aliases": [{"alias": a.name, "version": str(a.version.number)} for a in aliases],
    }
    if with_latest:
        latest = latest_version(model)
        shape["latest_versions"] = [model_version(latest)] if latest else []
    return shape
