"""Settings: the signed-in user's API tokens; webhooks and environments for administrators.

Every write goes through registry.services (tokens, webhooks, promotions); a service's
RegistryError is shown on the page as the form's error, never as a server error.
"""

import json
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from registry.errors import InvalidInput, RegistryError
from registry.models import Alias, ApiToken, Environment, Webhook, WebhookDelivery
from registry.services import access, promotions
from registry.services import tokens as token_service
from registry.services import webhooks as webhook_service

from .browse import paginate

COMMON_EVENTS = [
    "model.created",
    "version.ready",
    "version.failed",
    "promotion.requested",
    "promotion.reviewed",
    "promotion.promoted",
    "promotion.blocked",
    "promotion.failed",
    "alias.moved",
    "monitor.alert.fired",
    "monitor.alert.resolved",
    "*",
]
OP_SYMBOLS = {">=": "≥", "<=": "≤", "!=": "≠", "==": "=", ">": ">", "<": "<"}
GATE_NAMES = {
    "scan_clean": "artifact scan clean",
    "package_ready": "package built",
    "checksums_verified": "checksums verified",
    "signature_compatible": "signature compatible with live",
    "healthy_in": "healthy in an earlier environment",
}
NEW = "__new__"


def _require_admin(user) -> None:
    if not access.is_admin(user):
        raise PermissionDenied("Only an administrator may manage this.")


def _whole_number(value: str, label: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"'{label}' must be a whole number.") from None


# --- tokens -----------------------------------------------------------------------------


def _active_tokens(user) -> QuerySet:
    now = timezone.now()
    return ApiToken.objects.filter(user=user, revoked_at__isnull=True).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    )


@login_required
@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    granted = [scope for scope in access.ALL_SCOPES if scope in access.role_scopes(request.user)]
    defaults = {"name": "", "scopes": granted, "days": str(token_service.DEFAULT_DAYS)}
    form, error, created = defaults, "", None
    if request.method == "POST":
        form = {
            "name": request.POST.get("name", ""),
            "scopes": request.POST.getlist("scopes"),
            "days": request.POST.get("days", "").strip(),
        }
        try:
            days = _whole_number(form["days"], "Expires in (days)")
            token, secret = token_service.create_token(
                request.user, form["name"], form["scopes"], days
            )
        except RegistryError as exc:
            error = exc.message
        else:
            # Rendered in this response only: the secret is never stored or shown again.
            form, created = defaults, {"token": token, "secret": secret}
    context = {
        "nav": "settings",
        "tab": "tokens",
        "tokens": _active_tokens(request.user),
        "granted": granted,
        "form": form,
        "form_error": error,
        "created": created,
        "max_days": settings.MODELGATE_TOKEN_MAX_DAYS,
    }
    return render(request, "webui/settings_tokens.html", context)


@login_required
@require_POST
def revoke_token(request: HttpRequest, token_id: int) -> HttpResponse:
    try:
        token = token_service.revoke_token(request.user, token_id)
    except RegistryError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Token “{token.name}” revoked.")
    return redirect("webui:tokens")


# --- webhooks ---------------------------------------------------------------------------


def _webhook_form(data: Any = None) -> dict:
    data = data or {}
    return {
        "url": data.get("url", "").strip(),
        "description": data.get("description", "").strip(),
        "events": data.getlist("events") if hasattr(data, "getlist") else [],
        "other_events": data.get("other_events", ""),
    }


def _webhook_events(form: dict) -> list[str]:
    others = [item.strip() for item in form["other_events"].split(",") if item.strip()]
    return [*form["events"], *others]


def _webhooks_with_counts() -> QuerySet:
    states = WebhookDelivery.State
    return Webhook.objects.annotate(
        delivered=Count("deliveries", filter=Q(deliveries__state=states.DELIVERED)),
        failed=Count("deliveries", filter=Q(deliveries__state=states.FAILED)),
        pending=Count("deliveries", filter=Q(deliveries__state=states.PENDING)),
    )


@login_required
@require_http_methods(["GET", "POST"])
def webhooks(request: HttpRequest) -> HttpResponse:
    _require_admin(request.user)
    form, error, created = _webhook_form(), "", None
    if request.method == "POST":
        form = _webhook_form(request.POST)
        data = {
            "url": form["url"],
            "events": _webhook_events(form),
            "description": form["description"],
        }
        try:
            created = webhook_service.create_webhook(request.user, data)
        except RegistryError as exc:
            error = exc.message
        else:
            form = _webhook_form()
    context = {
        "nav": "settings",
        "tab": "webhooks",
        "webhooks": _webhooks_with_counts(),
        "common_events": COMMON_EVENTS,
        "form": form,
        "form_error": error,
        "created": created,
    }
    return render(request, "webui/settings_webhooks.html", context)


def _change_webhook(request: HttpRequest, webhook: Webhook, action: str) -> HttpResponse:
    if action == "delete":
        webhook_service.delete_webhook(request.user, webhook)
        messages.success(request, f"Webhook to {webhook.url} deleted.")
        return redirect("webui:webhooks")
    if action not in ("activate", "deactivate"):
        raise InvalidInput("Unknown action.")
    webhook_service.update_webhook(request.user, webhook, {"active": action == "activate"})
    messages.success(request, f"Webhook {action}d.")
    return redirect("webui:webhook", webhook_id=webhook.pk)


def _attempts(delivery: WebhookDelivery) -> list[dict]:
    """The delivery's attempts with their ISO times parsed, for the template's date filter."""
    attempts = []
    for attempt in delivery.attempts:
        try:
            at = datetime.fromisoformat(str(attempt.get("at", "")).replace("Z", "+00:00"))
        except ValueError:
            at = None
        attempts.append({**attempt, "at": at})
    return attempts


@login_required
@require_http_methods(["GET", "POST"])
def webhook_detail(request: HttpRequest, webhook_id: int) -> HttpResponse:
    _require_admin(request.user)
    webhook = get_object_or_404(Webhook.objects.select_related("created_by"), pk=webhook_id)
    if request.method == "POST":
        try:
            return _change_webhook(request, webhook, request.POST.get("action", ""))
        except RegistryError as exc:
            messages.error(request, exc.message)
            return redirect("webui:webhook", webhook_id=webhook.pk)
    page = paginate(request, webhook.deliveries.select_related("event").order_by("-id"))
    context = {
        "nav": "settings",
        "tab": "webhooks",
        "webhook": webhook,
        "page_obj": page,
        "rows": [{"delivery": delivery, "attempts": _attempts(delivery)} for delivery in page],
    }
    return render(request, "webui/settings_webhook.html", context)


# --- environments -----------------------------------------------------------------------


def describe_gate(gate: dict) -> str:
    """A gate as a person would say it: "accuracy ≥ 0.9", "not worse than live: accuracy"."""
    kind = gate.get("type", "")
    if kind == "metric":
        value = gate.get("value")
        shown = f"{value:g}" if isinstance(value, int | float) else str(value)
        return f"{gate.get('metric')} {OP_SYMBOLS.get(gate.get('op'), gate.get('op'))} {shown}"
    if kind == "metric_not_worse":
        return f"not worse than live: {gate.get('metric') or 'the primary metric'}"
    return GATE_NAMES.get(kind, kind.replace("_", " "))


def _policy_values(environment: Environment | None) -> dict[str, Any]:
    if environment is None:
        return {
            "name": "",
            "description": "",
            "required_approvals": "1",
            "reviewer_group": access.REVIEWERS,
            "maintainer_approvals": "0",
            "allow_self_approval": False,
            "gates": "[]",
            "allowed_globals": "",
        }
    return {
        "name": environment.name,
        "description": environment.description,
        "required_approvals": str(environment.required_approvals),
        "reviewer_group": environment.reviewer_group,
        "maintainer_approvals": str(environment.maintainer_approvals),
        "allow_self_approval": environment.allow_self_approval,
        "gates": json.dumps(environment.gates, indent=2),
        "allowed_globals": "\n".join(environment.allowed_globals),
    }


def _posted_policy(post) -> dict[str, Any]:
    return {
        "name": post.get("name", "").strip(),
        "description": post.get("description", ""),
        "required_approvals": post.get("required_approvals", "").strip(),
        "reviewer_group": post.get("reviewer_group", "").strip(),
        "maintainer_approvals": post.get("maintainer_approvals", "").strip() or "0",
        "allow_self_approval": post.get("allow_self_approval") == "on",
        "gates": post.get("gates", "").strip() or "[]",
        "allowed_globals": post.get("allowed_globals", ""),
    }


def _policy_data(values: dict[str, Any]) -> dict[str, Any]:
    """The form's text as the service's policy dict; the service validates the rest."""
    try:
        gates = json.loads(values["gates"])
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"Gates must be JSON: {exc.msg} (line {exc.lineno}).") from None
    return {
        "description": values["description"],
        "required_approvals": _whole_number(values["required_approvals"], "Required approvals"),
        "reviewer_group": values["reviewer_group"],
        "maintainer_approvals": _whole_number(
            values["maintainer_approvals"], "Approvals from the team's maintainers"
        ),
        "allow_self_approval": values["allow_self_approval"],
        "gates": gates,
        "allowed_globals": values["allowed_globals"].split(),
    }


def _save_environment(request: HttpRequest, target: str, values: dict[str, Any]) -> None:
    policy = _policy_data(values)
    if target == NEW:
        environment = promotions.create_environment(request.user, values["name"], policy)
        messages.success(request, f"Environment {environment.name} created.")
    else:
        environment = promotions.get_environment(target)
        promotions.update_environment(request.user, environment, policy)
        messages.success(request, f"Environment {environment.name} updated.")


def _live_models(names: list[str]) -> dict[str, list[Alias]]:
    live: dict[str, list[Alias]] = {name: [] for name in names}
    aliases = Alias.objects.filter(name__in=names).select_related("model", "version")
    for alias in aliases.order_by("model__name"):
        live[alias.name].append(alias)
    return live


@login_required
@require_http_methods(["GET", "POST"])
def environments(request: HttpRequest) -> HttpResponse:
    failed, error, posted = "", "", None
    if request.method == "POST":
        _require_admin(request.user)
        target = request.POST.get("environment") or NEW
        posted = _posted_policy(request.POST)
        try:
            _save_environment(request, target, posted)
        except RegistryError as exc:
            failed, error = target, exc.message
        else:
            return redirect("webui:environments")
    envs = list(Environment.objects.all())
    if error and failed != NEW and failed not in {environment.name for environment in envs}:
        messages.error(request, error)
    live = _live_models([environment.name for environment in envs])
    rows = [
        {
            "environment": environment,
            "gates": [describe_gate(gate) for gate in environment.gates],
            "live": live[environment.name],
            "form": posted if failed == environment.name else _policy_values(environment),
            "error": error if failed == environment.name else "",
        }
        for environment in envs
    ]
    context = {
        "nav": "settings",
        "tab": "environments",
        "rows": rows,
        "is_admin": access.is_admin(request.user),
        "new_form": posted if failed == NEW else _policy_values(None),
        "new_error": error if failed == NEW else "",
    }
    return render(request, "webui/settings_environments.html", context)
