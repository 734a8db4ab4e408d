"""Monitors: threshold rules on a model's windows in one environment.

`{"model": "churn", "environment": "production", "metric": "error_rate", "op": ">",
"value": 0.01, "window": 300, "min_samples": 100}` fires an alert (registry.services.
monitoring.alerts) when the model's last complete `window` seconds of traffic hold at least
`min_samples` records and the condition holds. Contributors (the write role) and admins
manage them; anyone who can read sees them.
"""

import math
import re
from typing import Any

from django.conf import settings
from django.db import transaction

from registry.errors import InvalidInput, NotFound
from registry.models import ALIAS_PATTERN, Monitor, RegisteredModel

from .. import access
from ..events import record_event

OPS = (">", ">=", "<", "<=")
LIVE_METRICS = ("accuracy", "f1", "mae", "rmse")
METRICS = (
    "requests",
    "error_rate",
    "latency_ms.p50",
    "latency_ms.p95",
    "latency_ms.p99",
    "drift.psi.max",
    *(f"live.{name}" for name in LIVE_METRICS),
    "quarantined",  # 1 while the version live in the environment is quarantined, else 0
)
FIELDS = {"model", "environment", "metric", "op", "value", "window", "min_samples", "enabled"}
MAX_WINDOW = 7 * 24 * 3600
_ENVIRONMENT = re.compile(ALIAS_PATTERN)


def may_edit_monitors(user, model: RegisteredModel) -> bool:
    """Those who may write to the model (and administrators) manage its monitors."""
    return access.can(user, model, access.WRITE)


def _require_editor(user, model: RegisteredModel) -> None:
    access.require_model(user, model, access.WRITE)


def get_monitor(user, monitor_id: int) -> Monitor:
    """The monitor, if `user` may read its model."""
    monitor = Monitor.objects.select_related("model__team").filter(pk=monitor_id).first()
    if monitor is None or not access.can(user, monitor.model, access.READ):
        raise NotFound(f"Monitor {monitor_id} does not exist.")
    return monitor


def _number(data: dict, field: str) -> float:
    value = data.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"'{field}' must be a finite number.", {"field": field})
    return float(value)


def _integer(data: dict, field: str, low: int, high: int) -> int:
    value = data.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(
            f"'{field}' must be a whole number from {low} to {high}.", {"field": field}
        )
    return value


def _clean(data: Any, partial: bool) -> dict:
    if not isinstance(data, dict):
        raise InvalidInput("The body must be a JSON object.")
    unknown = set(data) - FIELDS
    if unknown:
        raise InvalidInput(
            f"Unknown fields: {', '.join(sorted(map(str, unknown)))}.",
            {"allowed": sorted(FIELDS)},
        )
    if partial and "model" in data:
        raise InvalidInput("A monitor's model cannot be changed; create another monitor.")
    required = () if partial else ("model", "environment", "metric", "op", "value")
    missing = [field for field in required if data.get(field) is None]
    if missing:
        raise InvalidInput(f"Missing fields: {', '.join(missing)}.", {"fields": missing})
    clean: dict[str, Any] = {}
    if "environment" in data:
        environment = data["environment"]
        if not isinstance(environment, str) or not _ENVIRONMENT.fullmatch(environment):
            raise InvalidInput(
                "'environment' must be an environment name such as 'staging'.",
                {"field": "environment"},
            )
        clean["environment"] = environment
    if "metric" in data:
        if data["metric"] not in METRICS:
            raise InvalidInput(
                f"'metric' must be one of {', '.join(METRICS)}.",
                {"field": "metric", "allowed": list(METRICS)},
            )
        clean["metric"] = data["metric"]
    if "op" in data:
        if data["op"] not in OPS:
            raise InvalidInput(
                f"'op' must be one of {' '.join(OPS)}.", {"field": "op", "allowed": list(OPS)}
            )
        clean["op"] = data["op"]
    if "value" in data:
        clean["value"] = _number(data, "value")
    length = settings.MODELGATE_MONITOR_WINDOW_SECONDS
    if "window" in data or not partial:
        window = data.get("window", length)
        clean["window_seconds"] = _integer({"window": window}, "window", length, MAX_WINDOW)
        if clean["window_seconds"] % length:
            raise InvalidInput(
                f"'window' must be a multiple of the aggregation window ({length} s).",
                {"field": "window"},
            )
    if "min_samples" in data:
        clean["min_samples"] = _integer(data, "min_samples", 0, 10**9)
    if "enabled" in data:
        if not isinstance(data["enabled"], bool):
            raise InvalidInput("'enabled' must be true or false.", {"field": "enabled"})
        clean["enabled"] = data["enabled"]
    return clean


def _summary(monitor: Monitor) -> dict:
    return {
        "monitor": monitor.pk,
        "environment": monitor.environment,
        "rule": f"{monitor.metric} {monitor.op} {monitor.value:g}",
        "window": monitor.window_seconds,
        "min_samples": monitor.min_samples,
        "enabled": monitor.enabled,
    }


def create_monitor(user, data: Any) -> Monitor:
    clean = _clean(data, partial=False)
    name = data["model"]
    model = RegisteredModel.objects.filter(name=name).first() if isinstance(name, str) else None
    if model is None or not access.can(user, model, access.READ):
        raise InvalidInput(f"Model '{name}' does not exist.", {"field": "model"})
    _require_editor(user, model)
    with transaction.atomic():
        monitor = Monitor.objects.create(model=model, created_by=user, **clean)
        record_event("monitor.created", user, model=model, data=_summary(monitor))
    return monitor


def update_monitor(monitor: Monitor, user, data: Any) -> Monitor:
    _require_editor(user, monitor.model)
    clean = _clean(data, partial=True)
    with transaction.atomic():
        Monitor.objects.filter(pk=monitor.pk).update(**clean)
        monitor = Monitor.objects.select_related("model").get(pk=monitor.pk)
        record_event(
            "monitor.updated",
            user,
            model=monitor.model,
            data={**_summary(monitor), "fields": sorted(clean)},
        )
    return monitor


def delete_monitor(monitor: Monitor, user) -> None:
    """Deletes the monitor and its alerts (the audit log keeps their events)."""
    _require_editor(user, monitor.model)
    with transaction.atomic():
        record_event("monitor.deleted", user, model=monitor.model, data=_summary(monitor))
        monitor.delete()
