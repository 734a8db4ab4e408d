"""Read-only views of monitoring for the API and the pages: a version's windows with drift
beside its baseline, an environment's overview, firing alerts and their history."""

from datetime import datetime, timedelta

from django.db.models import QuerySet
from django.utils import timezone

from registry.models import Alert, Alias, ApiToken, Environment, ModelVersion, MonitoringWindow

from .. import access
from . import drift
from .monitors import LIVE_METRICS

DEFAULT_SPAN = timedelta(days=1)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _binned(profile: dict, live: list[int]) -> tuple[dict, dict]:
    """(baseline, live) of one feature in the baseline's own bins or categories."""
    numeric = drift.numeric_bins(profile)
    if numeric:
        edges, counts = numeric
        return {"edges": edges, "counts": counts}, {"edges": edges, "counts": live}
    values, counts = drift.category_bins(profile) or ([], [])
    names = [*values, drift.OTHER]
    return (
        {"values": dict(zip(names, counts, strict=False))},
        {"values": dict(zip(names, live, strict=False))},
    )


def offline_metrics(version: ModelVersion) -> dict[str, float]:
    """The version's own metrics that have a live counterpart (same name)."""
    return {k: v for k, v in (version.metrics or {}).items() if k in LIVE_METRICS}


def window_dict(window: MonitoringWindow, version: ModelVersion) -> dict:
    features = (version.baseline or {}).get("features") or {}
    found = {}
    for name, result in window.drift.items():
        baseline, live = _binned(features.get(name, {}), result.get("counts", []))
        found[name] = {
            "psi": result.get("psi"),
            "test": result.get("test"),
            "statistic": result.get("statistic"),
            "p_value": result.get("p_value"),
            "drifted": result.get("drifted", False),
            "n": result.get("n", 0),
            "missing": result.get("missing", 0),
            "baseline": baseline,
            "live": live,
        }
    return {
        "start": _iso(window.start),
        "end": _iso(window.end),
        "environment": window.environment,
        "requests": window.requests,
        "errors": window.errors,
        "error_rate": window.errors / window.requests if window.requests else None,
        "latency_ms": {
            "p50": window.latency_p50,
            "p95": window.latency_p95,
            "p99": window.latency_p99,
        },
        "predictions": window.predictions,
        "drift": found,
        "live_metrics": window.live_metrics,
        "offline_metrics": offline_metrics(version),
        "labelled": window.labelled,
    }


def version_monitoring(
    version: ModelVersion,
    *,
    environment: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict:
    """The version's baseline and its windows, oldest first (by default the last day's)."""
    if since is None:
        since = (until or timezone.now()) - DEFAULT_SPAN
    windows = MonitoringWindow.objects.filter(version=version, start__gte=since)
    if until is not None:
        windows = windows.filter(start__lt=until)
    if environment:
        windows = windows.filter(environment=environment)
    return {
        "baseline": version.baseline,
        "windows": [window_dict(w, version) for w in windows.order_by("start", "environment")],
    }


def vouched_traffic(version: ModelVersion, environment: Environment) -> dict:
    """What the version served in `environment`, split by whether its ingest token may
    vouch for it: a token bound to that environment, not revoked, held by an admin or a
    member of the environment's deploy group, and not by the version's own creator. Anyone
    else could post made-up traffic for a version that never ran there."""
    per_token: dict[str, list[int]] = {}
    windows = MonitoringWindow.objects.filter(version=version, environment=environment.name)
    for sources in windows.values_list("sources", flat=True):
        for token_id, (requests, errors) in sources.items():
            counted = per_token.setdefault(token_id, [0, 0])
            counted[0] += requests
            counted[1] += errors
    ids = [int(t) for t in per_token if t.isdigit()]
    tokens = ApiToken.objects.filter(pk__in=ids).select_related("user")
    vouching = {str(t.pk): t for t in tokens if _may_vouch(t, version, environment)}
    counted, uncounted = [0, 0], 0
    for token_id, (requests, errors) in per_token.items():
        if token_id in vouching:
            counted[0] += requests
            counted[1] += errors
        else:
            uncounted += requests
    return {
        "requests": counted[0],
        "errors": counted[1],
        "tokens": [
            {"id": t.pk, "name": t.name, "user": t.user.username}
            for t in sorted(vouching.values(), key=lambda t: t.pk)
        ],
        "uncounted_requests": uncounted,
    }


def _may_vouch(token: ApiToken, version: ModelVersion, environment: Environment) -> bool:
    user = token.user
    if token.environment != environment.name or token.revoked_at is not None:
        return False
    if not user.is_active or user.pk == version.created_by_id:
        return False
    if user.is_staff or user.is_superuser:
        return True
    group = environment.deploy_group
    return bool(group) and user.groups.filter(name=group).exists()


def firing_alerts(
    user=None, *, model: str | None = None, environment: str | None = None
) -> QuerySet:
    return alert_history(user, model=model, environment=environment, limit=None).filter(
        state=Alert.State.FIRING
    )


def alert_history(
    user=None,
    *,
    model: str | None = None,
    environment: str | None = None,
    limit: int | None = 50,
) -> QuerySet:
    """Alerts, newest first; with `user`, only those of models they may read."""
    alerts = Alert.objects.select_related("monitor", "monitor__model").order_by("-fired_at", "-id")
    if user is not None:
        alerts = access.visible(user, alerts, "monitor__model")
    if model:
        alerts = alerts.filter(monitor__model__name=model)
    if environment:
        alerts = alerts.filter(monitor__environment=environment)
    return alerts[:limit] if limit else alerts


def environment_overview(user, environment_name: str) -> list[dict]:
    """One row per model live in the environment that `user` may read, from its live
    version's latest window."""
    rows = []
    aliases = access.visible(user, Alias.objects.filter(name=environment_name))
    aliases = aliases.select_related("model", "version")
    for alias in aliases.order_by("model__name"):
        window = (
            MonitoringWindow.objects.filter(version=alias.version, environment=environment_name)
            .order_by("-start")
            .first()
        )
        psis = (
            [d["psi"] for d in window.drift.values() if d.get("psi") is not None] if window else []
        )
        rows.append(
            {
                "model": alias.model.name,
                "version": alias.version.number,
                "window_start": _iso(window.start) if window else None,
                "requests": window.requests if window else 0,
                "error_rate": (window.errors / window.requests)
                if window and window.requests
                else None,
                "latency_p95": window.latency_p95 if window else None,
                "max_psi": max(psis) if psis else None,
                "drifted_features": sorted(n for n, d in window.drift.items() if d.get("drifted"))
                if window
                else [],
                "firing_alerts": firing_alerts(
                    model=alias.model.name, environment=environment_name
                ).count(),
            }
        )
    return rows
