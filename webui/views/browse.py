"""Browsing the registry: the models list, a model's page, comparing versions, the audit log.

Reads are ORM queries; the one write here, creating a model, goes through
registry.services.registered_models like every other door.
"""

from collections import Counter
from datetime import date, datetime, time
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Page, Paginator
from django.db.models import Prefetch, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_http_methods

from registry.errors import InvalidInput, RegistryError
from registry.models import (
    Alias,
    Environment,
    Event,
    ModelVersion,
    Promotion,
    RegisteredModel,
    Team,
)
from registry.services import access, registered_models
from registry.services.queries import filter_tags

from .. import charts
from ..comparison import compare as compare_versions

PAGE_SIZE = 50
SORTS = {
    "name": ("Name", ("name",)),
    "updated": ("Last updated", ("-updated_at", "name")),
    "latest": ("Latest version", ("-last_version_number", "name")),
}
OTHER_METRICS = 3
MAX_COMPARED = 8
DATA_TEXT_LIMIT = 120
AUDIT_FILTERS = ("model", "actor", "type", "since", "until")


# --- shared helpers ---------------------------------------------------------------------


def paginate(request: HttpRequest, items: Any, per_page: int = PAGE_SIZE) -> Page:
    return Paginator(items, per_page).get_page(request.GET.get("page"))


def model_or_404(request: HttpRequest, name: str) -> RegisteredModel:
    """The model, if the signed-in user may read it; else a 404, as if it did not exist."""
    model = RegisteredModel.objects.select_related("created_by", "team").filter(name=name).first()
    if model is None or not access.can(request.user, model, access.READ):
        raise Http404(f"Model '{name}' does not exist.")
    return model


def environment_names() -> set[str]:
    return set(Environment.objects.values_list("name", flat=True))


def _require_write(user) -> None:
    if access.WRITE not in access.role_scopes(user):
        raise PermissionDenied("Your role does not allow creating models.")


# --- models list ------------------------------------------------------------------------


def _models_with_tag_value(query: str) -> list[int]:
    """Ids of models with a tag whose value contains `query` (keys do not count)."""
    needle = query.lower()
    candidates = RegisteredModel.objects.all()  # narrowed to what the user sees by the caller
    if query.isascii():  # JSON text escapes other characters, so only narrow when safe
        candidates = candidates.filter(tags__icontains=query)
    return [
        pk
        for pk, tags in candidates.values_list("pk", "tags")
        if any(needle in str(value).lower() for value in (tags or {}).values())
    ]


def _search_models(user, params: dict[str, str]) -> tuple[QuerySet, str]:
    """The models `user` may see, filtered and sorted, and an error message for a
    malformed filter."""
    aliases = Alias.objects.select_related("version").only("name", "model_id", "version__number")
    models = access.visible_models(user).select_related("team")
    models = models.prefetch_related(Prefetch("aliases", queryset=aliases))
    error = ""
    if params["team"]:
        models = models.filter(team__name=params["team"])
    if params["q"]:
        q = params["q"]
        models = models.filter(
            Q(name__icontains=q) | Q(description__icontains=q) | Q(pk__in=_models_with_tag_value(q))
        )
    if params["tag"]:
        try:
            models = filter_tags(models, "tags", [params["tag"]])
        except InvalidInput as exc:
            error = exc.message
    if params["env"]:
        models = models.filter(aliases__name=params["env"])
    return models.order_by(*SORTS[params["sort"]][1]), error


def _tag_choices(user) -> list[str]:
    pairs = {
        f"{key}:{value}"
        for tags in access.visible_models(user).values_list("tags", flat=True)
        for key, value in (tags or {}).items()
    }
    return sorted(pairs)[:200]


def _create_form(data: dict | None = None) -> dict[str, str]:
    data = data or {}
    return {
        "name": data.get("name", "").strip(),
        "description": data.get("description", ""),
        "team": data.get("team", "").strip(),
        "visibility": data.get("visibility", "team"),
    }


def _writable_teams(user) -> list[str]:
    if access.is_admin(user):
        return list(Team.objects.values_list("name", flat=True))
    writers = [pk for pk, role in access.team_roles(user).items() if role != "viewer"]
    return list(Team.objects.filter(pk__in=writers).values_list("name", flat=True))


@login_required
@require_GET
def models_index(request: HttpRequest) -> HttpResponse:
    params = {key: request.GET.get(key, "").strip() for key in ("q", "tag", "env", "team", "sort")}
    if params["sort"] not in SORTS:
        params["sort"] = "name"
    models, error = _search_models(request.user, params)
    context = {
        "nav": "models",
        "page_obj": paginate(request, models),
        "params": params,
        "filtered": any(params[key] for key in ("q", "tag", "env", "team")),
        "teams": Team.objects.order_by("name").values_list("name", flat=True),
        "writable_teams": _writable_teams(request.user),
        "filter_error": error,
        "sorts": [(key, label) for key, (label, _) in SORTS.items()],
        "environments": sorted(environment_names()),
        "tag_choices": _tag_choices(request.user),
        "form": _create_form(),
    }
    return render(request, "webui/models.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def model_create(request: HttpRequest) -> HttpResponse:
    _require_write(request.user)
    form, error = _create_form(request.POST), ""
    if request.method == "POST":
        try:
            model = registered_models.create_model(
                request.user,
                form["name"],
                description=form["description"],
                team=form["team"] or None,
                visibility=form["visibility"],
            )
        except RegistryError as exc:
            error = exc.message
        else:
            messages.success(request, f"Model {model.name} created.")
            return redirect("webui:model", name=model.name)
    context = {
        "nav": "models",
        "form_only": True,
        "form": form,
        "form_error": error,
        "writable_teams": _writable_teams(request.user),
    }
    return render(request, "webui/models.html", context)


# --- model page -------------------------------------------------------------------------


def _metric_columns(model: RegisteredModel) -> list[str]:
    """The primary metric first, then the (up to 3) metrics most versions report."""
    counts: Counter = Counter()
    for metrics in model.versions.values_list("metrics", flat=True):
        counts.update((metrics or {}).keys())
    if not counts:
        return []
    by_use = sorted(counts, key=lambda name: (-counts[name], name))
    primary = model.primary_metric or by_use[0]
    others = [name for name in by_use if name != primary][:OTHER_METRICS]
    return [primary, *others]


def _metric_chart(model: RegisteredModel, metric: str) -> str:
    ready = model.versions.filter(state=ModelVersion.State.READY).order_by("number")
    points = [
        (f"v{number}", metrics[metric])
        for number, metrics in ready.values_list("number", "metrics")
        if metric in (metrics or {})
    ]
    return charts.metric_chart(points, metric)


def _version_rows(versions: Page, columns: list[str], aliases: list[Alias]) -> list[dict]:
    by_version: dict[int, list[Alias]] = {}
    for alias in aliases:
        by_version.setdefault(alias.version_id, []).append(alias)
    return [
        {
            "version": version,
            "metrics": [version.metrics.get(name) for name in columns],
            "aliases": by_version.get(version.pk, []),
        }
        for version in versions
    ]


@login_required
@require_GET
def model_detail(request: HttpRequest, name: str) -> HttpResponse:
    model = model_or_404(request, name)
    aliases = list(model.aliases.select_related("version"))
    protected = environment_names()
    versions = paginate(request, model.versions.select_related("created_by").order_by("-number"))
    columns = _metric_columns(model)
    open_promotions = model.promotions.filter(state__in=Promotion.OPEN_STATES).select_related(
        "version", "environment", "requested_by"
    )
    context = {
        "nav": "models",
        "model": model,
        "aliases": aliases,
        "protected": protected,
        "not_live": sorted(protected - {alias.name for alias in aliases}),
        "columns": columns,
        "page_obj": versions,
        "rows": _version_rows(versions, columns, aliases),
        "chart": mark_safe(_metric_chart(model, columns[0])) if columns else "",  # noqa: S308 - escaped in charts
        "open_promotions": open_promotions,
        "grants": model.grants.select_related("team", "user"),
        "can_manage": access.can(request.user, model, access.MANAGE),
        "can_write": access.can(request.user, model, access.WRITE),
        "teams": Team.objects.exclude(pk=model.team_id).values_list("name", flat=True),
    }
    return render(request, "webui/model.html", context)


# --- compare ----------------------------------------------------------------------------


def _requested_numbers(values: list[str]) -> list[int]:
    numbers: list[int] = []
    for value in values:
        if value.strip().isdigit() and int(value) not in numbers:
            numbers.append(int(value))
    return numbers


def _metric_cells(rows: list) -> list[dict]:
    """Metric rows with each non-baseline value paired with its delta and direction."""
    return [
        {
            "name": row.name,
            "changed": row.changed,
            "base": row.values[0],
            "cells": [
                {"value": value, "delta": delta, "better": better}
                for value, delta, better in zip(row.values[1:], row.deltas, row.better, strict=True)
            ],
        }
        for row in rows
    ]


def _compare_columns(versions: list[ModelVersion]) -> list[dict]:
    """Each compared version with the query string that makes it the baseline."""
    numbers = [version.number for version in versions]

    def as_baseline(number: int) -> str:
        return "?" + urlencode([("v", number), *(("v", n) for n in numbers if n != number)])

    return [{"version": v, "as_baseline": as_baseline(v.number)} for v in versions]


@login_required
@require_GET
def compare(request: HttpRequest, name: str) -> HttpResponse:
    model = model_or_404(request, name)
    numbers = _requested_numbers(request.GET.getlist("v"))[:MAX_COMPARED]
    found = {
        version.number: version
        for version in model.versions.filter(number__in=numbers).prefetch_related("files")
    }
    versions = [found[number] for number in numbers if number in found]
    context = {
        "nav": "models",
        "model": model,
        "missing": [number for number in numbers if number not in found],
        "latest_two": list(model.versions.order_by("-number").values_list("number", flat=True)[:2]),
    }
    if len(versions) >= 2:
        comparison = compare_versions(versions)
        context.update(
            comparison=comparison,
            metrics=_metric_cells(comparison["metrics"]),
            columns=_compare_columns(versions),
        )
    return render(request, "webui/compare.html", context)


# --- audit log --------------------------------------------------------------------------


def _date(value: str, label: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"'{label}' must be a date like 2025-01-31.") from None


def _filtered_events(user, params: dict[str, str]) -> QuerySet:
    events = access.visible_events(user, Event.objects.select_related("model").order_by("-id"))
    if params["model"]:
        events = events.filter(model_name=params["model"])
    if params["actor"]:
        events = events.filter(actor_name=params["actor"])
    if params["type"]:
        events = events.filter(type=params["type"])
    since, until = _date(params["since"], "Since"), _date(params["until"], "Until")
    zone = timezone.get_current_timezone()
    if since:
        events = events.filter(at__gte=datetime.combine(since, time.min, tzinfo=zone))
    if until:
        events = events.filter(at__lte=datetime.combine(until, time.max, tzinfo=zone))
    return events


def _compact(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_compact(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_compact(item) for item in value) + "]"
    return "—" if value is None or value == "" else str(value)


def _data_pairs(data: dict) -> list[tuple[str, str]]:
    pairs = []
    for key, value in (data or {}).items():
        text = _compact(value)
        if len(text) > DATA_TEXT_LIMIT:
            text = text[: DATA_TEXT_LIMIT - 1] + "…"
        pairs.append((key, text))
    return pairs


def _distinct(user, field: str) -> list[str]:
    events = access.visible_events(user, Event.objects.order_by())
    values = events.exclude(**{field: ""}).values_list(field, flat=True)
    return sorted(set(values.distinct()))


@login_required
@require_GET
def audit_log(request: HttpRequest) -> HttpResponse:
    params = {key: request.GET.get(key, "").strip() for key in AUDIT_FILTERS}
    try:
        events = _filtered_events(request.user, params)
        error = ""
    except InvalidInput as exc:
        events, error = Event.objects.none(), exc.message
    page = paginate(request, events)
    context = {
        "nav": "audit",
        "params": params,
        "filtered": any(params.values()),
        "filter_error": error,
        "page_obj": page,
        "rows": [{"event": event, "data": _data_pairs(event.data)} for event in page],
        "types": _distinct(request.user, "type"),
        "actors": _distinct(request.user, "actor_name"),
        "model_names": _distinct(request.user, "model_name"),
    }
    return render(request, "webui/audit.html", context)
