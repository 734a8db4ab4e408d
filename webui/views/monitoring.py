"""Monitoring pages: a version's monitoring tab, a dashboard per environment, and the
forms that create, edit and delete monitors. Reads go through
registry.services.monitoring.query, writes through .monitors."""

from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST

from registry import errors
from registry.models import Environment, Monitor, MonitoringWindow, RegisteredModel
from registry.services.monitoring import monitors as monitor_service
from registry.services.monitoring import query
from webui.charts import distribution_chart, series_chart

from .browse import model_or_404
from .versions import get_version

HOURS = (1, 6, 24, 72, 168, 720)
DEFAULT_HOURS = 24


def _hours(request: HttpRequest) -> int:
    try:
        hours = int(request.GET.get("hours", DEFAULT_HOURS))
    except ValueError:
        return DEFAULT_HOURS
    return hours if hours in HOURS else DEFAULT_HOURS


def _label(start: str, span_hours: int) -> str:
    at = parse_datetime(start)
    return at.strftime("%H:%M" if span_hours <= 24 else "%m-%d %H:%M") if at else start


def _safe(svg: str):
    return mark_safe(svg)  # noqa: S308 - webui.charts escapes every piece of text it draws


def _charts(windows: list[dict], hours: int) -> list[dict]:
    """The time series of a version's windows: traffic, latency, errors, live quality."""
    labels = [_label(w["start"], hours) for w in windows]
    latency = [(f"{p}", [w["latency_ms"].get(p) for w in windows]) for p in ("p50", "p95", "p99")]
    charts = [
        {
            "title": "Requests per window",
            "svg": series_chart(
                labels, [("requests", [w["requests"] for w in windows])], "Requests per window"
            ),
        },
        {"title": "Latency (ms)", "svg": series_chart(labels, latency, "Latency (ms)")},
        {
            "title": "Error rate",
            "svg": series_chart(
                labels, [("error rate", [w["error_rate"] for w in windows])], "Error rate"
            ),
        },
    ]
    names = sorted({name for w in windows for name in w["live_metrics"]})
    for name in names:
        offline = next(
            (w["offline_metrics"].get(name) for w in windows if name in w["offline_metrics"]), None
        )
        series = [(f"live {name}", [w["live_metrics"].get(name) for w in windows])]
        if offline is not None:
            series.append((f"offline {name}", [offline] * len(windows)))
        title = f"Live {name} against offline"
        charts.append({"title": title, "svg": series_chart(labels, series, title)})
    return [{**chart, "svg": _safe(chart["svg"])} for chart in charts if chart["svg"]]


def _drift_rows(window: dict | None) -> list[dict]:
    if not window:
        return []
    rows = [{"feature": name, **result} for name, result in window["drift"].items()]
    return sorted(rows, key=lambda r: (not r["drifted"], -(r["psi"] or 0), r["feature"]))


def _monitor_forms(request: HttpRequest, model: RegisteredModel, environment: str | None) -> dict:
    monitors = Monitor.objects.filter(model=model).order_by("environment", "id")
    return {
        "monitors": monitors,
        "can_edit_monitors": monitor_service.may_edit_monitors(request.user, model),
        "monitor_metrics": monitor_service.METRICS,
        "monitor_ops": monitor_service.OPS,
        "monitor_window": settings.MODELGATE_MONITOR_WINDOW_SECONDS,
        "environment_names": list(Environment.objects.values_list("name", flat=True)),
        "default_environment": environment,
    }


@login_required
@require_GET
def version_monitoring(request: HttpRequest, name: str, number: int) -> HttpResponse:
    version = get_version(request, name, number)
    model = version.model
    hours = _hours(request)
    since = timezone.now() - timedelta(hours=hours)
    seen = list(
        MonitoringWindow.objects.filter(version=version)
        .order_by("environment")
        .values_list("environment", flat=True)
        .distinct()
    )
    environment = request.GET.get("environment") or None
    if environment not in seen:
        latest = MonitoringWindow.objects.filter(version=version).order_by("-start").first()
        environment = latest.environment if latest else None
    data = query.version_monitoring(version, environment=environment, since=since)
    windows = data["windows"] if environment else []
    latest = next((w for w in reversed(windows) if w["requests"]), None)
    drift_rows = _drift_rows(latest)
    chosen = request.GET.get("feature") or (drift_rows[0]["feature"] if drift_rows else None)
    feature = next((r for r in drift_rows if r["feature"] == chosen), None)
    requests_total = sum(w["requests"] for w in windows)
    errors_total = sum(w["errors"] for w in windows)
    psi_svg = ""
    if feature:
        psi_svg = series_chart(
            [_label(w["start"], hours) for w in windows],
            [("PSI", [w["drift"].get(feature["feature"], {}).get("psi") for w in windows])],
            f"PSI of {feature['feature']}",
        )
    context = {
        "nav": "models",
        "tab": "monitoring",
        "model": model,
        "version": version,
        "environment": environment,
        "environments_seen": seen,
        "hours": hours,
        "hour_choices": HOURS,
        "has_baseline": bool(version.baseline),
        "windows": windows,
        "latest": latest,
        "totals": {
            "requests": requests_total,
            "errors": errors_total,
            "error_rate": errors_total / requests_total if requests_total else None,
            "labelled": sum(w["labelled"] for w in windows),
        },
        "charts": _charts(windows, hours),
        "drift_rows": drift_rows,
        "feature": feature,
        "feature_svg": _safe(
            distribution_chart(
                feature["baseline"], feature["live"], f"{feature['feature']}: baseline and live"
            )
        )
        if feature
        else "",
        "psi_svg": _safe(psi_svg),
        "firing": list(
            query.firing_alerts(request.user, model=model.name, environment=environment)
        ),
        "history": list(
            query.alert_history(request.user, model=model.name, environment=environment)
        ),
        "back": request.get_full_path(),
        **_monitor_forms(request, model, environment),
    }
    return render(request, "webui/monitoring_version.html", context)


@login_required
@require_GET
def monitoring_index(request: HttpRequest) -> HttpResponse:
    first = Environment.objects.order_by("name").first()
    if first is None:
        messages.info(request, "No environments yet; monitoring starts once one is set up.")
        return redirect("webui:environments")
    return redirect("webui:environment-monitoring", name=first.name)


@login_required
@require_GET
def environment_monitoring(request: HttpRequest, name: str) -> HttpResponse:
    environment = Environment.objects.filter(name=name).first()
    if environment is None:
        raise Http404(f"Environment '{name}' does not exist.")
    rows = query.environment_overview(request.user, name)
    for row in rows:
        row["since"] = parse_datetime(row["window_start"]) if row.get("window_start") else None
    context = {
        "nav": "monitoring",
        "environment": environment,
        "environments": Environment.objects.order_by("name"),
        "rows": rows,
        "live_models": len(rows),
        "firing": list(query.firing_alerts(request.user, environment=name)),
        "history": list(query.alert_history(request.user, environment=name)),
    }
    return render(request, "webui/monitoring_environment.html", context)


# --- monitors: create, edit, delete (contributors of the model and admins) -------------


def _back(request: HttpRequest, fallback: str) -> str:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return fallback


def _monitor_data(post) -> dict:
    """The form's strings as the JSON types the service checks; bad numbers are a message."""
    data = {}
    for field in ("environment", "metric", "op"):
        if post.get(field, "").strip():
            data[field] = post[field].strip()
    for field, kind in (("value", float), ("window", int), ("min_samples", int)):
        text = post.get(field, "").strip()
        if not text:
            continue
        try:
            data[field] = kind(text)
        except ValueError:
            what = "a number" if kind is float else "a whole number"
            raise errors.InvalidInput(f"'{field}' must be {what}.") from None
    if "enabled" in post or "enabled_present" in post:
        data["enabled"] = post.get("enabled") == "on"
    return data


def _monitor_action(request: HttpRequest, model: RegisteredModel, action) -> HttpResponse:
    if not monitor_service.may_edit_monitors(request.user, model):
        raise PermissionDenied(f"You may not write to model '{model.name}'.")
    back = _back(request, reverse("webui:model", args=[model.name]))
    try:
        message = action()
    except errors.PermissionDenied as exc:
        raise PermissionDenied(exc.message) from None
    except errors.RegistryError as exc:
        messages.error(request, exc.message)
        return redirect(back)
    messages.success(request, message)
    return redirect(back)


@login_required
@require_POST
def monitor_create(request: HttpRequest, name: str) -> HttpResponse:
    model = model_or_404(request, name)

    def create() -> str:
        monitor = monitor_service.create_monitor(
            request.user, {"model": model.name, **_monitor_data(request.POST)}
        )
        return f"Monitor added: {monitor}."

    return _monitor_action(request, model, create)


def _monitor(request: HttpRequest, monitor_id: int) -> Monitor:
    try:
        return monitor_service.get_monitor(request.user, monitor_id)
    except errors.NotFound as exc:
        raise Http404(exc.message) from None


@login_required
@require_POST
def monitor_update(request: HttpRequest, monitor_id: int) -> HttpResponse:
    monitor = _monitor(request, monitor_id)

    def update() -> str:
        updated = monitor_service.update_monitor(monitor, request.user, _monitor_data(request.POST))
        return f"Monitor saved: {updated}."

    return _monitor_action(request, monitor.model, update)


@login_required
@require_POST
def monitor_delete(request: HttpRequest, monitor_id: int) -> HttpResponse:
    monitor = _monitor(request, monitor_id)

    def delete() -> str:
        text = str(monitor)
        monitor_service.delete_monitor(monitor, request.user)
        return f"Monitor deleted: {text}."

    return _monitor_action(request, monitor.model, delete)
