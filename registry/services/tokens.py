"""API tokens: shown once, stored as a hash, scoped, expiring, revocable."""

import copy
import hashlib
import hmac
import secrets
import time
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.utils import timezone

from registry.errors import InvalidInput, NotFound, PermissionDenied
from registry.models import ApiToken, ModelGrant, TeamMembership

from . import access, validation
from . import teams as teams_service
from .events import record_event
from .registered_models import get_model

PREFIX = "mgt"
DEFAULT_DAYS = 90
INGEST = "ingest"  # write prediction records and feedback for one model, nothing else


def _hash(secret: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough; no password stretching needed.
    return hashlib.sha256(secret.encode()).hexdigest()


def _ingest_binding(user, scopes: list[str], model, environment) -> tuple:
    """(model, environment) of an ingest token: the `ingest` scope alone, one model, made by
    someone who may write to models."""
    if set(scopes) != {INGEST}:
        raise InvalidInput(
            "An ingest token has the scope 'ingest' alone; 'model' and 'environment' bind "
            "ingest tokens only.",
            {"allowed": [INGEST]},
        )
    if model is None:
        raise InvalidInput("An ingest token needs the 'model' it writes records for.")
    found = get_model(user, validation.model_name(model), access.WRITE)
    if environment is not None:
        environment = validation.alias_name(environment, "Environment")
    return found, environment or ""


def _within_parent(parent: ApiToken, scopes: list[str] | None) -> list[str]:
    """The scopes a token may give the child it mints: never one it lacks itself. An
    ingest token is a narrowing of `write`."""
    if parent.model_id is not None:
        raise PermissionDenied("An ingest token can only write prediction records and feedback.")
    if scopes is None:
        return list(parent.scopes)
    if not isinstance(scopes, list):
        return scopes  # create_token words the shape error
    held = set(parent.scopes) | ({INGEST} if access.WRITE in parent.scopes else set())
    beyond = {s for s in scopes if isinstance(s, str)} - held
    if beyond:
        raise PermissionDenied(
            f"A token cannot mint scopes it lacks: {', '.join(sorted(beyond))}.",
            {"parent_scopes": sorted(parent.scopes)},
        )
    return scopes


def _limits(user, teams, models, parent: ApiToken | None) -> tuple[list, list]:
    """The teams and models a token is limited to: named ones the user belongs to or may
    write to, within its parent's limits; unnamed, its parent's (if any)."""
    for value, field in ((teams, "teams"), (models, "models")):
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(v, str) for v in value)
        ):
            raise InvalidInput(f"'{field}' must be a list of names.")
    found_teams = [teams_service.get_team(name) for name in dict.fromkeys(teams or [])]
    for team in found_teams:
        if team.pk not in access.team_roles(user) and not access.is_admin(user):
            raise PermissionDenied(f"You are not a member of team '{team.name}'.")
    found_models = [
        get_model(user, validation.model_name(name)) for name in dict.fromkeys(models or [])
    ]
    teams_in, models_in = parent.limit_ids() if parent is not None else ((), ())
    if not teams_in and not models_in:
        return found_teams, found_models
    if not found_teams and not found_models:
        return list(parent.limit_teams.all()), list(parent.limit_models.all())
    outside = [t.name for t in found_teams if t.pk not in teams_in] + [
        m.name for m in found_models if m.pk not in models_in and m.team_id not in teams_in
    ]
    if outside:
        raise PermissionDenied(
            f"A token cannot reach beyond its own limits: {', '.join(outside)}.",
            {"outside": outside},
        )
    return found_teams, found_models


def _expiry(days, parent: ApiToken | None):
    max_days = settings.MODELGATE_TOKEN_MAX_DAYS
    chosen = DEFAULT_DAYS if days is None else days
    if isinstance(chosen, bool) or not isinstance(chosen, int) or not 1 <= chosen <= max_days:
        raise InvalidInput(f"'expires_in_days' must be between 1 and {max_days}.")
    expires_at = timezone.now() + timedelta(days=chosen)
    if parent is None or parent.expires_at is None or expires_at <= parent.expires_at:
        return expires_at
    if days is None:  # unasked, the child simply ends with its parent
        return parent.expires_at
    raise InvalidInput(
        f"A token cannot mint one that outlives it: this one expires at "
        f"{parent.expires_at:%Y-%m-%dT%H:%M:%SZ}.",
        {"parent_expires_at": parent.expires_at.isoformat()},
    )


def create_token(
    user,
    name: str,
    scopes: list[str] | None = None,
    expires_in_days: int | None = None,
    model: str | None = None,
    environment: str | None = None,
    parent: ApiToken | None = None,
    teams: list[str] | None = None,
    models: list[str] | None = None,
) -> tuple[ApiToken, str]:
    """Returns the token and its secret; the secret is not kept and cannot be shown again.

    With `scopes=["ingest"]` the token is bound to `model` (and `environment`, if given).
    `parent` is the token the request came with, if it was not a password or session: the
    new token is bounded by it and recorded as its child. `teams` and `models` limit where
    it acts (see access.py)."""
    granted = access.role_scopes(user)
    if not granted:
        raise PermissionDenied("Inactive users cannot create tokens.")
    if parent is not None:
        scopes = _within_parent(parent, scopes)
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise InvalidInput("'name' must be 1-100 characters.")
    if scopes is None:
        scopes = sorted(granted)
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        raise InvalidInput(
            "'scopes' must be a non-empty list.", {"allowed": list(access.ALL_SCOPES)}
        )
    bound_model, bound_environment = None, ""
    if INGEST in scopes or model is not None or environment is not None:
        bound_model, bound_environment = _ingest_binding(user, scopes, model, environment)
    else:
        unknown = set(scopes) - set(access.ALL_SCOPES)
        if unknown:
            raise InvalidInput(
                f"Unknown scopes: {', '.join(sorted(unknown))}.",
                {"allowed": [*access.ALL_SCOPES, INGEST]},
            )
        beyond = set(scopes) - granted
        if beyond:
            raise PermissionDenied(
                f"Your role does not grant: {', '.join(sorted(beyond))}.",
                {"granted": sorted(granted)},
            )
    limit_teams, limit_models = _limits(user, teams, models, parent)
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    with transaction.atomic():
        if parent is not None:  # locked: a revocation running now finishes first, or waits
            parent = ApiToken.objects.select_for_update().get(pk=parent.pk)
            if not parent.is_active:
                raise PermissionDenied("The token minting this one has been revoked.")
        expires_at = _expiry(expires_in_days, parent)
        token = ApiToken.objects.create(
            user=user,
            name=name.strip(),
            key_id=key_id,
            secret_hash=_hash(secret),
            scopes=sorted(set(scopes)),
            expires_at=expires_at,
            model=bound_model,
            environment=bound_environment,
            parent=parent,
        )
        token.limit_teams.set(limit_teams)
        token.limit_models.set(limit_models)
        data = {"token_id": token.pk, "name": token.name, "scopes": token.scopes}
        if limit_teams or limit_models:
            data["teams"] = [t.name for t in limit_teams]
            data["models"] = [m.name for m in limit_models]
        if parent is not None:
            data["parent_id"] = parent.pk
        if bound_model is not None:
            data.update(model=bound_model.name, environment=bound_environment)
        record_event("token.created", user, model=bound_model, data=data)
    return token, f"{PREFIX}_{key_id}_{secret}"


# Recent lookups, per process: (valid until, token with its user, the user's groups), by
# the sha256 of the presented token. A hit costs no query. Expiry is checked on every
# request; revoking a token or changing a user, their groups, teams or grants empties the
# cache of the process that made the change at once (signals below), and other processes
# within CACHE_SECONDS; what the token may do with a model is decided live in any case
# (access.py). Failed lookups are never cached.
CACHE_SECONDS = 2.0
_recent: dict[str, tuple[float, ApiToken, frozenset[str]]] = {}


def forget_cached_tokens(**_) -> None:
    _recent.clear()


post_save.connect(forget_cached_tokens, sender=ApiToken, dispatch_uid="tokens-cache-save")
post_delete.connect(forget_cached_tokens, sender=ApiToken, dispatch_uid="tokens-cache-del")
post_save.connect(forget_cached_tokens, sender=get_user_model(), dispatch_uid="tokens-cache-u")
post_delete.connect(forget_cached_tokens, sender=get_user_model(), dispatch_uid="tokens-cache-ud")
post_save.connect(forget_cached_tokens, sender=Group, dispatch_uid="tokens-cache-g")
post_delete.connect(forget_cached_tokens, sender=Group, dispatch_uid="tokens-cache-gd")
m2m_changed.connect(
    forget_cached_tokens, sender=get_user_model().groups.through, dispatch_uid="tokens-cache-m2m"
)
for _model in (TeamMembership, ModelGrant):  # they change what a role allows
    post_save.connect(forget_cached_tokens, sender=_model, dispatch_uid=f"tokens-{_model}-s")
    post_delete.connect(forget_cached_tokens, sender=_model, dispatch_uid=f"tokens-{_model}-d")


def _lookup(key_id: str, secret: str) -> tuple[ApiToken, frozenset[str]] | None:
    token = ApiToken.objects.select_related("user").filter(key_id=key_id).first()
    if token is None or not hmac.compare_digest(token.secret_hash, _hash(secret)):
        return None
    token.limit_ids()  # read now, kept with the cached token
    # What the user's role allows at the door; access to each model is still decided live.
    token.role_scopes = frozenset(access.role_scopes(token.user))
    return token, frozenset(token.user.groups.values_list("name", flat=True))


def authenticate(raw: str) -> ApiToken | None:
    """The active token for a presented secret (its user loaded, groups known), or None."""
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    digest, now = _hash(raw), time.monotonic()
    entry = _recent.get(digest)
    if entry is None or entry[0] < now:
        found = _lookup(parts[1], parts[2])
        if found is None:
            return None
        if len(_recent) > 10_000:  # only a flood of distinct tokens gets here
            _recent.clear()
        entry = (now + CACHE_SECONDS, *found)
        _recent[digest] = entry
    cached, groups = entry[1], entry[2]
    if not cached.is_active or not cached.user.is_active:
        return None
    stamp = timezone.now()
    if cached.last_used_at is None or stamp - cached.last_used_at > timedelta(minutes=1):
        cached.last_used_at = stamp
        ApiToken.objects.filter(pk=cached.pk).update(last_used_at=stamp)
    # Copies: requests on other threads share the cached instances.
    token, user = copy.copy(cached), copy.copy(cached.user)
    user._modelgate_groups = set(groups)
    user._modelgate_scopes = cached.role_scopes
    user._modelgate_teams = None  # memberships are read afresh: leaving a team acts at once
    user.acting_token = token  # access.py narrows what the user may do to what it allows
    token.user = user
    return token


def _may_revoke(user, token: ApiToken) -> bool:
    """Its owner, an admin, or a maintainer of the team that owns its service account."""
    if token.user_id == user.pk or access.is_admin(user):
        return True
    account = getattr(token.user, "service_account", None)
    return account is not None and teams_service.may_manage(user, account.team)


def revoke_token(user, token_id: int) -> ApiToken:
    """Revoke a token and every token minted from it, at any depth."""
    token = (
        ApiToken.objects.select_related("user__service_account__team").filter(pk=token_id).first()
    )
    if token is None or not _may_revoke(user, token):
        raise NotFound(f"Token {token_id} does not exist.")
    with transaction.atomic():
        token = ApiToken.objects.select_for_update().get(pk=token.pk)
        now, lineage, level = timezone.now(), [token.pk], [token.pk]
        while level:
            level = list(ApiToken.objects.filter(parent_id__in=level).values_list("pk", flat=True))
            lineage += level
        revoked = ApiToken.objects.filter(pk__in=lineage, revoked_at__isnull=True)
        descendants = sorted(revoked.exclude(pk=token.pk).values_list("pk", flat=True))
        if revoked.update(revoked_at=now):
            data = {"token_id": token.pk, "name": token.name, "descendants": descendants}
            record_event("token.revoked", user, data=data)
            forget_cached_tokens()  # update() sends no post_save
        token.refresh_from_db()
    return token
