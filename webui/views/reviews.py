"""The reviewers' queue, the review page (candidate against what is live), and deciding."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from registry import errors
from registry.models import Alias, ModelVersion, Promotion, Review, VersionFile
from registry.services import access, promotions
from registry.services.promotions import may_review, reviewable_by
from webui.comparison import compare

from .versions import explanation_context, lineage_rows

State = Promotion.State
# States the promotion page keeps polling through; any other state is settled.
MOVING_STATES = (State.APPROVED, State.PROMOTING)


def may_decide(user, promotion: Promotion, reviews: list[Review]) -> bool:
    return (
        promotion.state == State.PENDING
        and may_review(user, promotion)
        and not any(r.reviewer_id == user.pk for r in reviews)
    )


def gate_summary(gates: list[dict]) -> dict:
    failing = [g for g in gates or [] if not g.get("passed")]
    return {"total": len(gates or []), "failing": len(failing), "passed": not failing}


def _rows(queryset: QuerySet) -> list[dict]:
    return [{"promotion": p, "gates": gate_summary(p.gates)} for p in queryset]


@login_required
@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    related = ("model", "version", "environment", "requested_by")
    waiting = reviewable_by(request.user).select_related(*related).order_by("requested_at", "id")
    own = (
        access.visible(request.user, Promotion.objects.filter(requested_by=request.user))
        .select_related(*related)
        .order_by("-requested_at", "-id")[:100]
    )
    context = {"nav": "reviews", "waiting": _rows(waiting), "own": _rows(own)}
    return render(request, "webui/reviews.html", context)


def _promotion(request: HttpRequest, promotion_id: int) -> Promotion:
    """The promotion, if the signed-in user may read its model; else a 404."""
    promotion = (
        Promotion.objects.select_related(
            "model",
            "version__model",
            "version__created_by",
            "environment",
            "requested_by",
            "previous_version",
        )
        .filter(pk=promotion_id)
        .first()
    )
    if promotion is None or not access.can(request.user, promotion.model, access.READ):
        raise Http404(f"Promotion {promotion_id} does not exist.")
    return promotion


def live_version_for(promotion: Promotion) -> ModelVersion | None:
    """The version the candidate replaces: recorded once promoted, else the alias now."""
    if promotion.state == State.PROMOTED:
        return promotion.previous_version
    alias = (
        Alias.objects.filter(model=promotion.model, name=promotion.environment.name)
        .select_related("version")
        .first()
    )
    if alias is None or alias.version_id == promotion.version_id:
        return None
    return alias.version


def _with_files(version: ModelVersion) -> ModelVersion:
    return (
        ModelVersion.objects.select_related("model")
        .prefetch_related(Prefetch("files", queryset=VersionFile.objects.order_by("path")))
        .get(pk=version.pk)
    )


@login_required
@require_GET
def review_page(request: HttpRequest, promotion_id: int) -> HttpResponse:
    promotion = _promotion(request, promotion_id)
    candidate = _with_files(promotion.version)
    live = live_version_for(promotion)
    live = _with_files(live) if live is not None else None
    reviews = list(promotion.reviews.select_related("reviewer"))
    is_requester = promotion.requested_by_id == request.user.pk
    context = {
        "nav": "reviews",
        "promotion": promotion,
        "environment": promotion.environment,
        "candidate": candidate,
        "live": live,
        "comparison": compare([live, candidate] if live else [candidate]),
        "gates": promotion.gates or [],
        "gate_summary": gate_summary(promotion.gates),
        "reviews": reviews,
        "approvals": sum(1 for r in reviews if r.decision == Review.Decision.APPROVE),
        "can_decide": may_decide(request.user, promotion, reviews),
        "is_requester": is_requester,
        "user_has_reviewed": any(r.reviewer_id == request.user.pk for r in reviews),
        "self_approval_blocked": is_requester and not promotion.environment.allow_self_approval,
        "moving": promotion.state in MOVING_STATES,
        "status_url": reverse("webui:promotion-status", args=[promotion.pk]),
        "lineage": lineage_rows(candidate),
        **explanation_context(candidate, live),
    }
    return render(request, "webui/review.html", context)


@login_required
@require_POST
def decide(request: HttpRequest, promotion_id: int) -> HttpResponse:
    promotion = _promotion(request, promotion_id)
    # Refused before anything else, so a forged form from the requester or a non-member
    # is a 403 whatever else it holds; the service checks the same policy again.
    if not may_review(request.user, promotion):
        raise PermissionDenied("You may not review this promotion.")
    decision = request.POST.get("decision", "")
    comment = request.POST.get("comment", "")
    try:
        promotion = promotions.review_promotion(promotion, request.user, decision, comment)
    except errors.PermissionDenied as exc:
        raise PermissionDenied(exc.message) from None
    except errors.RegistryError as exc:
        messages.error(request, exc.message)
        return redirect("webui:promotion", promotion_id=promotion_id)
    if decision == Review.Decision.REJECT:
        messages.success(request, "You rejected this promotion.")
    elif promotion.state == State.APPROVED:
        messages.success(request, "Approved. A worker re-checks the gates and promotes it now.")
    else:
        messages.success(request, "Your approval is recorded; more approvals are needed.")
    return redirect("webui:promotion", promotion_id=promotion_id)


@login_required
@require_GET
def promotion_status(request: HttpRequest, promotion_id: int) -> JsonResponse:
    promotion = (
        Promotion.objects.select_related("version", "environment", "model")
        .filter(pk=promotion_id)
        .first()
    )
    if promotion is None or not access.can(request.user, promotion.model, access.READ):
        return JsonResponse({"error": "not_found"}, status=404)
    alias = (
        Alias.objects.filter(model_id=promotion.model_id, name=promotion.environment.name)
        .select_related("version")
        .first()
    )
    return JsonResponse(
        {
            "id": promotion.pk,
            "state": promotion.state,
            "status_reason": promotion.status_reason,
            "version": promotion.version.number,
            "environment": promotion.environment.name,
            "current_version": alias.version.number if alias else None,
            "settled": promotion.state not in (State.PENDING, *MOVING_STATES),
        }
    )
