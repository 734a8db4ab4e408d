"""Evaluating monitors after each aggregation: an alert fires once, resolves once.

A monitor looks at its model's windows in its environment over the last complete
`window_seconds` (the window still filling is left out, so a half-empty window does not
flap an alert), all versions together:

- `requests`: their sum ("silent model" with `requests < 1`; only for a model that is live
  in that environment or has served there before; `min_samples` does not apply).
- `error_rate`: errors / requests. `latency_ms.pNN`: the worst window's percentile.
- `drift.psi.max`: per version, the live counts of its windows added up per feature and
  the PSI recomputed against its baseline; the largest of them.
- `live.<metric>`: the windows' values weighted by their labelled records (RMSE as the
  root of the weighted mean square).
- `quarantined`: 1 while the version live in the environment is quarantined (a rescan found
  it unsafe), else 0. A rescan that quarantines a live version sets one up and fires it.

With fewer than `min_samples` records (labelled ones for `live.*`) nothing changes: an
alert neither fires nor resolves on too little evidence. Each change is one transaction
with its event, `monitor.alert.fired` or `monitor.alert.resolved`, which webhooks deliver.
"""

import logging
import math
import operator
from datetime import datetime, timedelta

import numpy as np
from django.db import IntegrityError, transaction
from django.utils import timezone

from registry.models import Alert, Alias, ModelVersion, Monitor, MonitoringWindow, RegisteredModel

from ..events import record_event
from ..locking import for_update
from . import aggregation, drift

log = logging.getLogger(__name__)

OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def span(monitor: Monitor, now: datetime) -> tuple[datetime, datetime]:
    """The last complete `window_seconds` before `now`."""
    end = aggregation.window_start(now)
    return end - timedelta(seconds=monitor.window_seconds), end


def measure(monitor: Monitor, now: datetime) -> dict:
    """{"value", "samples", ...evidence} of the monitor's metric over its span."""
    start, end = span(monitor, now)
    if monitor.metric == "quarantined":
        return _quarantined(monitor, start, end)
    windows = list(
        MonitoringWindow.objects.filter(
            model_id=monitor.model_id,
            environment=monitor.environment,
            start__gte=start,
            start__lt=end,
        ).select_related("version")
    )
    requests = sum(w.requests for w in windows)
    errors = sum(w.errors for w in windows)
    result = {
        "value": None,
        "samples": requests,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "versions": sorted({w.version.number for w in windows}),
    }
    metric = monitor.metric
    if metric == "requests":
        result["value"] = float(requests)
    elif metric == "error_rate":
        result["value"] = errors / requests if requests else None
    elif metric.startswith("latency_ms."):
        field = "latency_" + metric.split(".", 1)[1]
        values = [getattr(w, field) for w in windows if getattr(w, field) is not None]
        result["value"] = max(values) if values else None
    elif metric == "drift.psi.max":
        result.update(_max_psi(windows))
    elif metric.startswith("live."):
        result.update(_live(windows, metric.split(".", 1)[1]))
    return result


def _max_psi(windows: list[MonitoringWindow]) -> dict:
    worst = {"value": None}
    by_version: dict[int, list[MonitoringWindow]] = {}
    for window in windows:
        by_version.setdefault(window.version_id, []).append(window)
    for group in by_version.values():
        version = group[0].version
        features = (version.baseline or {}).get("features") or {}
        for name in {name for w in group for name in w.drift}:
            binned = drift.numeric_bins(features.get(name, {})) or drift.category_bins(
                features.get(name, {})
            )
            counts = [w.drift[name]["counts"] for w in group if name in w.drift]
            if binned is None or not counts:
                continue
            live = np.sum(np.asarray(counts, dtype=float), axis=0)
            if live.sum() == 0:
                continue
            value = drift.psi(np.asarray(binned[1], dtype=float), live)
            if worst["value"] is None or value > worst["value"]:
                worst = {"value": round(value, 6), "feature": name, "version": version.number}
    return worst


def _live(windows: list[MonitoringWindow], name: str) -> dict:
    pairs = [(w.live_metrics[name], w.labelled) for w in windows if name in w.live_metrics]
    labelled = sum(n for _, n in pairs)
    if not labelled:
        return {"value": None, "samples": 0}
    if name == "rmse":
        value = math.sqrt(sum(v * v * n for v, n in pairs) / labelled)
    else:
        value = sum(v * n for v, n in pairs) / labelled
    return {"value": round(value, 6), "samples": labelled}


def _quarantined(monitor: Monitor, start: datetime, end: datetime) -> dict:
    alias = (
        Alias.objects.filter(model_id=monitor.model_id, name=monitor.environment)
        .select_related("version")
        .first()
    )
    live = alias.version if alias else None
    value = float(live is not None and live.state == ModelVersion.State.QUARANTINED)
    return {
        "value": value,
        "samples": 1,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "versions": [live.number] if live else [],
        **({"version": live.number, "reason": live.status_reason} if value else {}),
    }


def watch_quarantine(model: RegisteredModel, environment: str) -> str | None:
    """Make sure a `quarantined > 0` monitor watches the environment, and evaluate it now."""
    monitor, _ = Monitor.objects.get_or_create(
        model=model,
        environment=environment,
        metric="quarantined",
        op=">",
        value=0,
        defaults={"window_seconds": aggregation.window_seconds(), "min_samples": 0},
    )
    if not monitor.enabled:
        return None  # someone switched it off on purpose
    return evaluate_monitor(monitor)


def _watched(monitor: Monitor) -> bool:
    """Whether silence means something: the model is live there or has served there."""
    return (
        Alias.objects.filter(model_id=monitor.model_id, name=monitor.environment).exists()
        or MonitoringWindow.objects.filter(
            model_id=monitor.model_id, environment=monitor.environment
        ).exists()
    )


def _event_data(monitor: Monitor, alert: Alert, measured: dict) -> dict:
    return {
        "alert": alert.pk,
        "monitor": monitor.pk,
        "environment": monitor.environment,
        "metric": monitor.metric,
        "op": monitor.op,
        "threshold": monitor.value,
        "value": measured["value"],
        "samples": measured["samples"],
        "window": {"start": measured["start"], "end": measured["end"]},
        **{k: measured[k] for k in ("feature", "version", "versions", "reason") if k in measured},
    }


def evaluate_monitor(monitor: Monitor, now: datetime | None = None) -> str | None:
    """Fire or resolve the monitor's alert; returns "fired", "resolved" or None."""
    now = now or timezone.now()
    measured = measure(monitor, now)
    value = measured["value"]
    if monitor.metric == "requests":
        if not _watched(monitor):
            return None
    elif value is None or measured["samples"] < max(monitor.min_samples, 1):
        return None  # too little evidence either way
    holds = OPS[monitor.op](value, monitor.value)
    with transaction.atomic():
        monitor = for_update(Monitor).select_related("model").get(pk=monitor.pk)
        firing = Alert.objects.filter(monitor=monitor, state=Alert.State.FIRING).first()
        if holds and firing is None:
            try:
                with transaction.atomic():
                    alert = Alert.objects.create(
                        monitor=monitor, value=value, detail=measured, fired_at=now
                    )
            except IntegrityError:
                return None  # another evaluation fired it first
            data = _event_data(monitor, alert, measured)
            record_event("monitor.alert.fired", None, model=monitor.model, data=data)
            return "fired"
        if not holds and firing is not None:
            firing.state, firing.resolved_at = Alert.State.RESOLVED, now
            firing.save(update_fields=["state", "resolved_at"])
            data = {**_event_data(monitor, firing, measured), "fired_value": firing.value}
            record_event("monitor.alert.resolved", None, model=monitor.model, data=data)
            return "resolved"
    return None


def evaluate_monitors(now: datetime | None = None) -> dict[str, int]:
    """Every enabled monitor, once; a failing one is logged and does not stop the others."""
    now = now or timezone.now()
    counts = {"fired": 0, "resolved": 0}
    for monitor in Monitor.objects.filter(enabled=True).select_related("model"):
        try:
            outcome = evaluate_monitor(monitor, now)
        except Exception:  # one broken monitor must not silence the rest
            log.exception("monitor %s could not be evaluated", monitor.pk)
            continue
        if outcome:
            counts[outcome] += 1
    return counts
