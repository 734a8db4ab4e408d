"""Who may do what: the one place every door asks.

Two things decide it. Token scopes (read, write, review, admin) say what kind of request
a caller may make at all; a user's own scopes are what their role allows, and a token
narrows them. Model levels (read, write, manage) say what a caller may do with one model:
the model's team gives its members their role's level, the model's maintainers may grant
other teams or users a level on it, and an `internal` model may be read by everyone signed
in. Admins manage everything. A token may be limited to some teams and models, and never
exceeds its user's access.

A model the caller may not read does not exist for them: lookups answer 404, lists and
counts leave it out, so names do not leak.
"""

import copy

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Case, IntegerField, Max, OuterRef, Q, QuerySet, Subquery, Value, When

from registry.errors import NotFound, PermissionDenied
from registry.models import ModelGrant, RegisteredModel, TeamMembership

REVIEWERS = "reviewers"

# Token scopes, from least to most privileged.
READ, WRITE, REVIEW, ADMIN = "read", "write", "review", "admin"
ALL_SCOPES = (READ, WRITE, REVIEW, ADMIN)

# Model levels (READ and WRITE are spelled as the scopes are), and what each role gives.
MANAGE = "manage"
RANK = {None: 0, READ: 1, WRITE: 2, MANAGE: 3}
Role = TeamMembership.Role
ROLE_LEVEL = {Role.VIEWER: READ, Role.CONTRIBUTOR: WRITE, Role.MAINTAINER: MANAGE}


def active(user) -> bool:
    return bool(user and user.is_authenticated and user.is_active)


def is_admin(user) -> bool:
    return active(user) and (user.is_staff or user.is_superuser)


def _groups(user) -> set[str]:
    cached = getattr(user, "_modelgate_groups", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        user._modelgate_groups = cached
    return cached


def is_member(user, group: str) -> bool:
    return active(user) and group in _groups(user)


def user_groups(user) -> list[str]:
    return sorted(_groups(user)) if active(user) else []


def team_roles(user) -> dict[int, str]:
    """{team id: role} for the user's teams, read once per request (never longer: taking
    someone out of a team stops them, and their tokens, at once)."""
    if not active(user):
        return {}
    cached = getattr(user, "_modelgate_teams", None)
    if cached is None:
        cached = dict(TeamMembership.objects.filter(user=user).values_list("team_id", "role"))
        user._modelgate_teams = cached
    return cached


def _grants_of(user) -> Q:
    return Q(user=user) | Q(team_id__in=list(team_roles(user)))


def role_scopes(user: AbstractBaseUser | AnonymousUser) -> set[str]:
    """The scopes a user's role grants: what any of their tokens may at most carry."""
    if not active(user):
        return set()
    if is_admin(user):
        return set(ALL_SCOPES)
    cached = getattr(user, "_modelgate_scopes", None)  # tokens.authenticate's cache
    if cached is not None:
        return set(cached)
    scopes = {READ}
    roles = set(team_roles(user).values())
    if (
        roles - {Role.VIEWER}
        or ModelGrant.objects.filter(_grants_of(user), level__in=(WRITE, MANAGE)).exists()
    ):
        scopes.add(WRITE)
    # Reviewers review for environments; maintainers approve for their team's models.
    if REVIEWERS in _groups(user) or Role.MAINTAINER in roles:
        scopes.add(REVIEW)
    return scopes


def acting_token(user):
    """The API token this request came with, if any (set by tokens.authenticate)."""
    return getattr(user, "acting_token", None)


def without_token(user):
    """The user as themselves, not narrowed by the token of this request (an ingest
    token's owner still needs write access to the model it feeds)."""
    if acting_token(user) is None:
        return user
    plain = copy.copy(user)
    plain.acting_token = None
    return plain


def _token_cap(user) -> str | None:
    """The highest model level the request's token allows, if a token is in use."""
    token = acting_token(user)
    if token is None:
        return MANAGE
    return MANAGE if {WRITE, ADMIN} & set(token.scopes) else READ


def _token_reaches(user, model: RegisteredModel) -> bool:
    token = acting_token(user)
    teams, models = token.limit_ids() if token is not None else ((), ())
    if not teams and not models:
        return True
    return model.team_id in teams or model.pk in models


def with_caller_access(models: QuerySet, user) -> QuerySet:
    """The models with the caller's role in each one's team and best grant on it read in
    the same query (`caller_role`, `caller_grant`, for `caller_id`), so `model_level`
    needs no query of its own: the read path's lookups stay one query. The read path's
    SQL (services/versions.py) selects the same three columns."""
    if not active(user):
        return models
    mine = TeamMembership.objects.filter(user=user)
    rank = Case(
        *(When(level=level, then=Value(RANK[level])) for level in (READ, WRITE, MANAGE)),
        output_field=IntegerField(),
    )
    best = (
        ModelGrant.objects.filter(
            Q(user=user) | Q(team_id__in=mine.values("team_id")), model=OuterRef("pk")
        )
        .order_by()
        .values("model")
        .annotate(best=Max(rank))
        .values("best")
    )
    role = mine.filter(team=OuterRef("team_id")).values("role")[:1]
    return models.annotate(
        caller_id=Value(user.pk), caller_role=Subquery(role), caller_grant=Subquery(best)
    )


BY_RANK = {rank: level for level, rank in RANK.items()}


def model_level(user, model: RegisteredModel, enough: str = MANAGE) -> str | None:
    """What the caller may do with the model: None, READ, WRITE or MANAGE. With `enough`,
    the answer may stop at that level without looking further (a READ check skips the
    grants query when the team or visibility already answers). A model read with
    `with_caller_access` answers from what came with it."""
    if not active(user) or not _token_reaches(user, model):
        return None
    if is_admin(user):
        level = MANAGE
    else:
        known = getattr(model, "caller_id", None) == user.pk
        role = model.caller_role if known else team_roles(user).get(model.team_id)
        level = ROLE_LEVEL.get(role)
        if model.visibility == RegisteredModel.Visibility.INTERNAL and RANK[level] < RANK[READ]:
            level = READ
        if known:
            level = max(level, BY_RANK[model.caller_grant or 0], key=RANK.__getitem__)
        elif RANK[level] < RANK[enough]:
            granted = ModelGrant.objects.filter(_grants_of(user), model=model)
            for found in granted.values_list("level", flat=True):
                level = max(level, found, key=RANK.__getitem__)
    cap = _token_cap(user)
    return level if RANK[level] <= RANK[cap] else cap


def can(user, model: RegisteredModel, level: str) -> bool:
    return RANK[model_level(user, model)] >= RANK[level]


def require_model(user, model: RegisteredModel, level: str = READ) -> RegisteredModel:
    """The model, if the caller may act on it at `level`: 404 when they may not even read
    it (its name does not leak), 403 when they may read it but not this."""
    held = model_level(user, model, enough=level)
    if held is None:
        raise not_found(model.name)
    if RANK[held] < RANK[level]:
        needed = {WRITE: "write to", MANAGE: "manage"}.get(level, level)
        raise PermissionDenied(
            f"You may not {needed} model '{model.name}'.", {"model": model.name, "level": held}
        )
    return model


def not_found(name: str) -> NotFound:
    return NotFound(f"Model '{name}' does not exist.", {"model": name})


def visible_models(user, level: str = READ) -> QuerySet[RegisteredModel]:
    """The models the caller may act on at `level`, as a query: `model_level`'s rule."""
    models = RegisteredModel.objects.all()
    if not active(user) or RANK[level] > RANK[_token_cap(user)]:
        return models.none()
    if not is_admin(user):
        roles = team_roles(user)
        enough = [lv for lv in (READ, WRITE, MANAGE) if RANK[lv] >= RANK[level]]
        teams = [team for team, role in roles.items() if ROLE_LEVEL[role] in enough]
        granted = ModelGrant.objects.filter(_grants_of(user), level__in=enough)
        rule = Q(team_id__in=teams) | Q(pk__in=granted.values("model_id"))
        if level == READ:
            rule |= Q(visibility=RegisteredModel.Visibility.INTERNAL)
        models = models.filter(rule)
    token = acting_token(user)
    teams, limited = token.limit_ids() if token is not None else ((), ())
    if teams or limited:
        models = models.filter(Q(team_id__in=teams) | Q(pk__in=limited))
    return models


def visible(user, queryset: QuerySet, field: str = "model", level: str = READ) -> QuerySet:
    """`queryset` narrowed to rows whose `field` (a model foreign key) the caller may see."""
    if is_admin(user) and acting_token(user) is None:
        return queryset
    return queryset.filter(**{f"{field}__in": visible_models(user, level)})


def visible_events(user, events: QuerySet) -> QuerySet:
    """The audit log as the caller may read it: the events of models they may read; of
    teams they belong to; environments' (policy is everyone's business); and their own.
    The events of deleted models, and everything else, are for admins."""
    if is_admin(user) and acting_token(user) is None:
        return events
    teams = TeamMembership.objects.filter(user=user).values_list("team__name", flat=True)
    model_less = Q(model__isnull=True, model_name="")
    return events.filter(
        Q(model__in=visible_models(user))
        | (model_less & Q(type__startswith="environment."))
        | (model_less & Q(type__startswith="team.", data__team__in=list(teams)))
        | (model_less & Q(actor=user))
    )


# --- what a team owns besides models (MLflow experiments and their runs) ----------------


def team_level(user, team_id: int) -> str | None:
    """What the caller may do with something team `team_id` owns that has no grants or
    visibility of its own: their role's level (admins manage), within the token's scopes
    and its team limits (a token limited to models only reaches no team's things)."""
    if not active(user):
        return None
    token = acting_token(user)
    teams, models = token.limit_ids() if token is not None else ((), ())
    if (teams or models) and team_id not in teams:
        return None
    level = MANAGE if is_admin(user) else ROLE_LEVEL.get(team_roles(user).get(team_id))
    if level is None:
        return None
    cap = _token_cap(user)
    return level if RANK[level] <= RANK[cap] else cap


def visible_team_ids(user, level: str = READ) -> list[int] | None:
    """The teams whose things the caller may act on at `level`; None: every team (an admin
    without a team-limited token)."""
    if not active(user) or RANK[level] > RANK[_token_cap(user)]:
        return []
    token = acting_token(user)
    teams, models = token.limit_ids() if token is not None else ((), ())
    if is_admin(user):
        return list(teams) if (teams or models) else None
    mine = [t for t, role in team_roles(user).items() if RANK[ROLE_LEVEL[role]] >= RANK[level]]
    return [t for t in mine if t in teams] if (teams or models) else mine
