"""Promotions: the only way a version enters a protected environment.

request → gates → pending (or blocked) → reviews → approved → a worker re-checks the gates
and moves the alias under the environment's row lock → promoted. Four eyes by default:
the requester never approves their own request unless the policy says so.
"""

from django.db import IntegrityError, transaction
from django.db.models import Max, Q, QuerySet
from django.utils import timezone

from registry.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from registry.models import Alias, Environment, ModelVersion, Promotion, Review, TeamMembership

from . import access, gates, jobs, validation
from .events import record_event
from .gitmirror import request_sync
from .locking import for_update

KIND = "promote"
State = Promotion.State


def get_environment(name: str) -> Environment:
    try:
        return Environment.objects.get(name=name)
    except Environment.DoesNotExist:
        raise NotFound(f"Environment '{name}' does not exist.", {"environment": name}) from None


def get_promotion(user, promotion_id: int) -> Promotion:
    """The promotion, if `user` may read its model (else it does not exist for them)."""
    promotion = (
        Promotion.objects.select_related("model__team", "version", "environment", "requested_by")
        .filter(pk=promotion_id)
        .first()
    )
    if promotion is None or not access.can(user, promotion.model, access.READ):
        raise NotFound(f"Promotion {promotion_id} does not exist.")
    return promotion


# --- environments --------------------------------------------------------------------

ENV_FIELDS = {
    "description",
    "required_approvals",
    "reviewer_group",
    "allow_self_approval",
    "gates",
    "allowed_globals",
    "deploy_group",
    "maintainer_approvals",
}


def _clean_policy(data: dict) -> dict:
    unknown = set(data) - ENV_FIELDS
    if unknown:
        raise InvalidInput(f"Unknown fields: {', '.join(sorted(unknown))}.")
    clean = {}
    if "description" in data:
        clean["description"] = validation.text(data["description"], "description")
    if "required_approvals" in data:
        value = data["required_approvals"]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10:
            raise InvalidInput("'required_approvals' must be between 0 and 10.")
        clean["required_approvals"] = value
    if "reviewer_group" in data:
        clean["reviewer_group"] = validation.text(data["reviewer_group"], "reviewer_group", 150)
    if "allow_self_approval" in data:
        if not isinstance(data["allow_self_approval"], bool):
            raise InvalidInput("'allow_self_approval' must be true or false.")
        clean["allow_self_approval"] = data["allow_self_approval"]
    if "gates" in data:
        clean["gates"] = gates.validate_gates(data["gates"])
    if "allowed_globals" in data:
        clean["allowed_globals"] = gates.validate_allowed_globals(data["allowed_globals"])
    if "deploy_group" in data:
        clean["deploy_group"] = validation.text(data["deploy_group"], "deploy_group", 150)
    if "maintainer_approvals" in data:
        value = data["maintainer_approvals"]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10:
            raise InvalidInput("'maintainer_approvals' must be between 0 and 10.")
        clean["maintainer_approvals"] = value
    return clean


def create_environment(user, name: str, data: dict) -> Environment:
    if not access.is_admin(user):
        raise PermissionDenied("Only an administrator may create environments.")
    validation.alias_name(name, "Environment")
    policy = _clean_policy(data)
    with transaction.atomic():
        if Environment.objects.filter(name=name).exists():
            raise Conflict(f"Environment '{name}' already exists.")
        if Alias.objects.filter(name=name).exists():
            raise Conflict(f"'{name}' is already used as a plain alias; delete those first.")
        environment = Environment.objects.create(name=name, **policy)
        record_event("environment.created", user, data={"environment": name, **policy})
    return environment


def update_environment(user, environment: Environment, data: dict) -> Environment:
    if not access.is_admin(user):
        raise PermissionDenied("Only an administrator may change environments.")
    policy = _clean_policy(data)
    with transaction.atomic():
        environment = for_update(Environment).get(pk=environment.pk)
        before = {k: getattr(environment, k) for k in policy}
        for key, value in policy.items():
            setattr(environment, key, value)
        environment.save()
        record_event(
            "environment.updated",
            user,
            data={"environment": environment.name, "before": before, "after": policy},
        )
    return environment


# --- requests and reviews ------------------------------------------------------------


def request_promotion(
    version: ModelVersion, user, environment_name: str, comment: str = ""
) -> Promotion:
    access.require_model(user, version.model, access.WRITE)
    comment = validation.text(comment, "comment", 5000)
    environment = get_environment(environment_name)
    with transaction.atomic():
        version = for_update(ModelVersion).select_related("model").get(pk=version.pk)
        if version.state != ModelVersion.State.READY:
            raise Conflict(
                f"Version {version.number} is {version.state}; only a ready "
                "version can be promoted.",
                {"state": version.state},
            )
        live = gates.live_version(version.model_id, environment)
        if live is not None and live.pk == version.pk:
            raise Conflict(f"Version {version.number} is already live in {environment.name}.")
        results = gates.evaluate(version, environment)
        blocked = not all(r["passed"] for r in results)
        try:
            with transaction.atomic():
                promotion = Promotion.objects.create(
                    model=version.model,
                    version=version,
                    environment=environment,
                    requested_by=user,
                    comment=comment,
                    gates=results,
                    state=State.BLOCKED if blocked else State.PENDING,
                    status_reason=_failed_gates(results) if blocked else "",
                )
        except IntegrityError:
            raise Conflict(
                f"Version {version.number} already has an open promotion to {environment.name}."
            ) from None
        record_event(
            "promotion.requested",
            user,
            version=version,
            data={
                "promotion": promotion.pk,
                "environment": environment.name,
                "state": promotion.state,
                "comment": comment,
            },
        )
        if blocked:
            record_event(
                "promotion.blocked",
                user,
                version=version,
                data={
                    "promotion": promotion.pk,
                    "environment": environment.name,
                    "reason": promotion.status_reason,
                },
            )
        elif environment.required_approvals == 0 and environment.maintainer_approvals == 0:
            _approve(promotion, user)
    return promotion


def _failed_gates(results: list[dict]) -> str:
    return "; ".join(f"{r['type']}: {r['detail']}" for r in results if not r["passed"])


def _transition(promotion: Promotion, state: str, actor, reason: str | None = None) -> None:
    """Move a locked promotion to `state` and record `promotion.<state>` with it."""
    promotion.state = state
    fields = ["state", "gates", "updated_at"]
    if reason is not None:
        promotion.status_reason = reason[:5000]
        fields.append("status_reason")
    promotion.save(update_fields=fields)
    data = {"promotion": promotion.pk, "environment": promotion.environment.name}
    if reason:
        data["reason"] = promotion.status_reason
    record_event(f"promotion.{state}", actor, version=promotion.version, data=data)


def _approve(promotion: Promotion, actor) -> None:
    _transition(promotion, State.APPROVED, actor)
    jobs.enqueue(KIND, promotion.pk)


def _counts_as(user, promotion: Promotion) -> set[str]:
    """Which of the policy's approvals `user` may give: "reviewer" (a member of the
    environment's reviewer group, or an admin) and/or "maintainer" (of the model's team)."""
    environment, roles = promotion.environment, set()
    if environment.required_approvals and (
        access.is_member(user, environment.reviewer_group) or access.is_admin(user)
    ):
        roles.add("reviewer")
    if environment.maintainer_approvals and (
        access.team_roles(user).get(promotion.model.team_id) == TeamMembership.Role.MAINTAINER
    ):
        roles.add("maintainer")
    return roles


def may_review(user, promotion: Promotion) -> bool:
    """Whether the environment's policy lets `user` review this promotion at all: they can
    read the model and give one of its approvals, and did not request it (four eyes)."""
    if not _counts_as(user, promotion) or not access.can(user, promotion.model, access.READ):
        return False
    return promotion.requested_by_id != user.pk or promotion.environment.allow_self_approval


def approvals_met(promotion: Promotion, approvers: list) -> bool:
    """Whether these approvers (distinct people) cover the policy: `required_approvals`
    reviewers and `maintainer_approvals` maintainers, nobody counted twice."""
    environment = promotion.environment
    need_r, need_m = environment.required_approvals, environment.maintainer_approvals
    kinds = [_counts_as(user, promotion) for user in approvers]
    only_r = sum(k == {"reviewer"} for k in kinds)
    only_m = sum(k == {"maintainer"} for k in kinds)
    both = sum(k == {"reviewer", "maintainer"} for k in kinds)
    # Hall's condition for two buckets: each alone, and both together, can be filled.
    return (
        only_r + both >= need_r
        and only_m + both >= need_m
        and only_r + only_m + both >= need_r + need_m
    )


def reviewable_by(user) -> QuerySet:
    """Pending promotions `user` may still decide: `may_review`, as a query."""
    queryset = access.visible(user, Promotion.objects.filter(state=State.PENDING))
    if not access.is_admin(user):
        maintained = [
            team
            for team, role in access.team_roles(user).items()
            if role == TeamMembership.Role.MAINTAINER
        ]
        queryset = queryset.filter(
            Q(
                environment__reviewer_group__in=access.user_groups(user),
                environment__required_approvals__gt=0,
            )
            | Q(model__team_id__in=maintained, environment__maintainer_approvals__gt=0)
        )
    return queryset.exclude(
        Q(requested_by=user) & Q(environment__allow_self_approval=False)
    ).exclude(reviews__reviewer=user)


def review_promotion(promotion: Promotion, user, decision: str, comment: str) -> Promotion:
    if decision not in Review.Decision.values:
        raise InvalidInput("'decision' must be 'approve' or 'reject'.")
    comment = validation.text(comment, "comment", 5000).strip()
    if not comment:
        raise InvalidInput("A review needs a comment saying why.")
    with transaction.atomic():
        promotion = (
            for_update(Promotion)
            .select_related("environment", "version__model", "model")
            .get(pk=promotion.pk)
        )
        environment = promotion.environment
        if not may_review(user, promotion):
            if promotion.requested_by_id == user.pk:
                raise PermissionDenied("You requested this promotion; someone else must review it.")
            who = [f"members of '{environment.reviewer_group}'"] * bool(
                environment.required_approvals
            ) + ["maintainers of the model's team"] * bool(environment.maintainer_approvals)
            raise PermissionDenied(
                f"Only {' or '.join(who) or 'nobody'} may review promotions to {environment.name}."
            )
        if promotion.state != State.PENDING:
            raise Conflict(
                f"Promotion {promotion.pk} is {promotion.state}, not pending.",
                {"state": promotion.state},
            )
        if promotion.reviews.filter(reviewer=user).exists():
            raise Conflict("You have already reviewed this promotion.")
        Review.objects.create(
            promotion=promotion,
            reviewer=user,
            reviewer_name=user.get_username(),
            decision=decision,
            comment=comment,
        )
        record_event(
            "promotion.reviewed",
            user,
            version=promotion.version,
            data={
                "promotion": promotion.pk,
                "environment": environment.name,
                "decision": decision,
                "comment": comment,
            },
        )
        if decision == Review.Decision.REJECT:
            reason = f"Rejected by {user.get_username()}: {comment}"
            _transition(promotion, State.REJECTED, user, reason)
        else:
            approvers = [
                review.reviewer
                for review in promotion.reviews.filter(
                    decision=Review.Decision.APPROVE, reviewer__isnull=False
                ).select_related("reviewer")
            ]
            if approvals_met(promotion, approvers):
                _approve(promotion, user)
    return promotion


def cancel_promotion(promotion: Promotion, user) -> Promotion:
    with transaction.atomic():
        promotion = (
            for_update(Promotion)
            .select_related("version__model", "environment")
            .get(pk=promotion.pk)
        )
        if promotion.requested_by_id != user.pk and not access.is_admin(user):
            raise PermissionDenied("Only the requester or an administrator may cancel.")
        if promotion.state not in (State.PENDING, State.BLOCKED):
            raise Conflict(
                f"Promotion {promotion.pk} is {promotion.state}; it can no longer be cancelled.",
                {"state": promotion.state},
            )
        _transition(promotion, State.CANCELLED, user)
    return promotion


# --- execution (worker) --------------------------------------------------------------


def _give_up(promotion_id: int, error: str) -> None:
    with transaction.atomic():
        promotion = (
            for_update(Promotion)
            .select_related("environment", "version__model")
            .filter(pk=promotion_id)
            .first()
        )
        if promotion is None or promotion.state not in (State.APPROVED, State.PROMOTING):
            return
        _transition(promotion, State.FAILED, None, error)


@jobs.handler(KIND, give_up=_give_up)
def execute_promotion(promotion_id: int) -> None:
    """Move the environment's alias, exactly once, if the gates still pass."""
    Promotion.objects.filter(pk=promotion_id, state=State.APPROVED).update(
        state=State.PROMOTING, updated_at=timezone.now()
    )
    with transaction.atomic():
        # The environment's row lock serializes every promotion into it.
        promotion = Promotion.objects.select_related("environment").get(pk=promotion_id)
        environment = for_update(Environment).get(pk=promotion.environment_id)
        promotion = (
            for_update(Promotion).select_related("version__model", "model").get(pk=promotion_id)
        )
        if promotion.state not in (State.APPROVED, State.PROMOTING):
            return  # already promoted (a duplicate message), cancelled, or failed
        version = promotion.version
        results = gates.evaluate(version, environment)
        promotion.gates = results
        if version.state != ModelVersion.State.READY or not all(r["passed"] for r in results):
            reason = _failed_gates(results) or f"version is {version.state}"
            _transition(promotion, State.BLOCKED, None, reason)
            return
        alias = (
            for_update(Alias)
            .filter(model=promotion.model, name=environment.name)
            .select_related("version")
            .first()
        )
        previous = alias.version if alias else None
        if alias is None:
            Alias.objects.create(
                model=promotion.model,
                name=environment.name,
                version=version,
                updated_by=promotion.requested_by,
            )
        else:
            alias.version, alias.updated_at = version, timezone.now()
            alias.updated_by = promotion.requested_by
            alias.save()
        last = (
            Promotion.objects.filter(model=promotion.model, environment=environment).aggregate(
                n=Max("sequence")
            )["n"]
            or 0
        )
        promotion.state, promotion.sequence = State.PROMOTED, last + 1
        promotion.previous_version, promotion.promoted_at = previous, timezone.now()
        promotion.status_reason = ""
        promotion.save()
        record_event(
            "alias.moved",
            None,
            version=version,
            data={
                "alias": environment.name,
                "from": previous.number if previous else None,
                "to": version.number,
                "promotion": promotion.pk,
            },
        )
        record_event(
            "promotion.promoted",
            None,
            version=version,
            data={
                "promotion": promotion.pk,
                "environment": environment.name,
                "from": previous.number if previous else None,
                "to": version.number,
                "sequence": promotion.sequence,
            },
        )
        request_sync()
