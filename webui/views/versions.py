"""The version page, its live status for the pipeline view, and requesting a promotion."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Prefetch
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST

from registry.errors import RegistryError
from registry.models import (
    Alias,
    Environment,
    Event,
    ModelVersion,
    Promotion,
    VersionFile,
)
from registry.services import access, promotions
from registry.services.versions import PIPELINE_STEPS
from webui.charts import importance_chart, importance_rows
from webui.markdown import render_model_card

STEP_LABELS = {
    "verify": "Verify checksums",
    "scan": "Scan for unsafe content",
    "extract": "Read metadata",
    "package": "Build package",
}
TIMELINE_LIMIT = 200


def get_version(request: HttpRequest, name: str, number: int) -> ModelVersion:
    """The version, if the signed-in user may read its model; else a 404."""
    version = (
        ModelVersion.objects.select_related("model", "created_by")
        .prefetch_related(
            Prefetch("files", queryset=VersionFile.objects.order_by("path")),
            Prefetch("aliases", queryset=Alias.objects.order_by("name")),
        )
        .filter(model__name=name, number=number)
        .select_related("model__team")
        .first()
    )
    if version is None or not access.can(request.user, version.model, access.READ):
        raise Http404(f"Version {number} of model '{name}' does not exist.")
    return version


def pipeline_steps(version: ModelVersion) -> list[dict]:
    pipeline = version.pipeline or {}
    return [
        {"name": step, "label": STEP_LABELS[step], "state": pipeline.get(step, "pending")}
        for step in PIPELINE_STEPS
    ]


def _api_file_url(version: ModelVersion, path: str) -> str:
    return reverse(
        "api:version-file",
        kwargs={"name": version.model.name, "ref": str(version.number), "path": path},
    )


def lineage_rows(version: ModelVersion) -> list[dict]:
    """Lineage fields to show; a run URL becomes a link only when it is http(s)."""
    rows = []
    for key, value in (version.lineage or {}).items():
        if value in (None, ""):
            continue
        text = str(value)
        link = text if text.lower().startswith(("https://", "http://")) else None
        rows.append({"key": key.replace("_", " "), "value": text, "link": link})
    return rows


def _summary(event: Event) -> str:
    """One line saying what an event changed, from the fields worth reading."""
    data = event.data or {}
    parts = []
    for key in ("environment", "alias", "state", "decision", "from", "to", "reason", "comment"):
        value = data.get(key)
        if value not in (None, ""):
            parts.append(f"{key}: {value}")
    if "files" in data and isinstance(data["files"], int):
        parts.append(f"{data['files']} file(s)")
    return "; ".join(parts)


@login_required
@require_GET
def version_detail(request: HttpRequest, name: str, number: int) -> HttpResponse:
    version = get_version(request, name, number)
    model = version.model
    # A quarantined version's bytes are refused for download: no link offers them.
    quarantined = version.state == ModelVersion.State.QUARANTINED
    files = [
        {
            "file": f,
            "download_url": _api_file_url(version, f.path)
            if f.complete and not quarantined
            else None,
        }
        for f in version.files.all()
    ]
    events = [
        {"event": e, "summary": _summary(e)}
        for e in Event.objects.filter(
            model_name=model.name, version_number=version.number
        ).order_by("-id")[:TIMELINE_LIMIT]
    ]
    version_promotions = (
        Promotion.objects.filter(version=version)
        .select_related("environment", "requested_by")
        .order_by("-id")
    )
    can_promote = (
        access.can(request.user, model, access.WRITE) and version.state == ModelVersion.State.READY
    )
    signature = version.signature or {}
    context = {
        "nav": "models",
        "model": model,
        "version": version,
        "files": files,
        "total_size": sum(f.size for f in version.files.all()),
        "aliases": list(version.aliases.all()),
        "environment_names": set(Environment.objects.values_list("name", flat=True)),
        "steps": pipeline_steps(version),
        "processing": version.state == ModelVersion.State.PROCESSING,
        "lineage": lineage_rows(version),
        "signature_inputs": signature.get("inputs") or [],
        "signature_outputs": signature.get("outputs") or [],
        "model_card": render_model_card(version.model_card),
        "events": events,
        "promotions": version_promotions,
        "can_promote": can_promote,
        "environments": Environment.objects.order_by("name") if can_promote else [],
        "package_url": (
            reverse("api:version-package", kwargs={"name": model.name, "ref": str(number)})
            if version.package_state == "ready" and not quarantined
            else None
        ),
        "quarantined": quarantined,
        "status_url": reverse("webui:version-status", args=[model.name, number]),
        **explanation_context(version),
    }
    return render(request, "webui/version.html", context)


def explanation_context(version: ModelVersion, live: ModelVersion | None = None) -> dict:
    """The explanations chart and table; with `live`, diffed against the live version's."""
    compare = live is not None
    rows = importance_rows(version.explanations, live.explanations if compare else None)
    title = f"Feature importance of v{version.number}" + (
        f" against live v{live.number}" if compare else ""
    )
    return {
        "explanations": version.explanations,
        "importance": rows,
        # charts.py escapes every piece of text it draws
        "importance_svg": mark_safe(importance_chart(rows, compare=compare, title=title)),  # noqa: S308
    }


@login_required
@require_GET
def version_status(request: HttpRequest, name: str, number: int) -> JsonResponse:
    version = (
        ModelVersion.objects.filter(model__name=name, number=number)
        .select_related("model")
        .only(
            "state", "status_reason", "pipeline", "scan_status", "package_state",
            "model__team_id", "model__visibility", "model__name",
        )
        .first()
    )  # fmt: skip
    if version is None or not access.can(request.user, version.model, access.READ):
        return JsonResponse({"error": "not_found"}, status=404)
    return JsonResponse(
        {
            "state": version.state,
            "status_reason": version.status_reason,
            "pipeline": {step["name"]: step["state"] for step in pipeline_steps(version)},
            "scan": {"status": version.scan_status},
            "package": {"state": version.package_state},
        }
    )


@login_required
@require_POST
def request_promotion(request: HttpRequest, name: str, number: int) -> HttpResponse:
    version = get_version(request, name, number)
    environment = request.POST.get("environment", "").strip()
    comment = request.POST.get("comment", "")
    back = reverse("webui:version", args=[name, number])
    if not environment:
        messages.error(request, "Choose the environment to promote to.")
        return redirect(back)
    try:
        promotion = promotions.request_promotion(version, request.user, environment, comment)
    except RegistryError as exc:
        messages.error(request, exc.message)
        return redirect(back)
    if promotion.state == Promotion.State.BLOCKED:
        messages.warning(
            request,
            f"Promotion to {environment} is blocked: {promotion.status_reason}",
        )
    elif promotion.state == Promotion.State.PENDING:
        messages.success(
            request,
            f"Promotion of version {number} to {environment} requested; a reviewer decides next.",
        )
    else:
        messages.success(
            request, f"Promotion of version {number} to {environment} is {promotion.state}."
        )
    return redirect("webui:promotion", promotion_id=promotion.pk)
