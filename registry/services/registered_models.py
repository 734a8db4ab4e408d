"""Creating, changing and deleting registered models, and who may reach them."""

from django.db import IntegrityError, transaction
from django.db.models import Case, When

from registry.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from registry.models import ModelGrant, RegisteredModel, Team

from . import access, gitmirror, validation
from .environments import live_environments
from .events import record_event
from .locking import for_update
from .teams import get_team

Visibility = RegisteredModel.Visibility


def get_model(user, name: str, level: str = access.READ) -> RegisteredModel:
    """The model called `name`, if `user` may act on it at `level` (access.require_model:
    404 when they may not read it, 403 when they may read but not this)."""
    models = RegisteredModel.objects.filter(name=name)
    model = access.with_caller_access(models, user).first()
    if model is None:
        raise access.not_found(name)
    return access.require_model(user, model, level)


def _team_for_new_model(user, team: str | None) -> Team:
    """The named team, or the one team the user may create models in."""
    if team is not None:
        found = get_team(validation.team_name(team))
        role = access.team_roles(user).get(found.pk)
        if not access.is_admin(user) and access.ROLE_LEVEL.get(role) not in (
            access.WRITE,
            access.MANAGE,
        ):
            raise PermissionDenied(f"You may not create models in team '{found.name}'.")
        return found
    writable = [
        pk
        for pk, role in access.team_roles(user).items()
        if access.ROLE_LEVEL[role] in (access.WRITE, access.MANAGE)
    ]
    if len(writable) == 1:
        return Team.objects.get(pk=writable[0])
    if not writable and not access.is_admin(user):
        raise PermissionDenied("You may not create models: no team of yours lets you.")
    raise InvalidInput("Say which 'team' the new model belongs to.", {"field": "team"})


def _same_name(name: str, besides: RegisteredModel | None = None) -> RegisteredModel | None:
    """The model named `name` or a name differing from it only in letter case: MLflow's
    names are case-sensitive, but 'Fraud' and 'fraud' side by side would pass for one
    another in every list, and collide in a Git mirror on a case-insensitive file system."""
    found = RegisteredModel.objects.filter(name__iexact=name)
    if besides is not None:
        found = found.exclude(pk=besides.pk)
    return found.order_by(Case(When(name=name, then=0), default=1)).first()


def _taken(name: str, existing: RegisteredModel, user) -> Conflict:
    if existing.name == name or access.model_level(user, existing) is None:
        return Conflict(f"Model '{name}' already exists.", {"model": name})
    return Conflict(
        f"Model '{name}' already exists as '{existing.name}': names differing only in "
        "letter case are refused.",
        {"model": name, "existing": existing.name},
    )


def create_model(
    user,
    name: str,
    *,
    description: str = "",
    tags: dict | None = None,
    team: str | None = None,
    visibility: str = Visibility.TEAM,
    primary_metric: str = "",
) -> RegisteredModel:
    name = validation.model_name(name)
    fields = {
        "description": validation.text(description, "description"),
        "tags": validation.string_map(tags, "tags"),
        "visibility": validation.choice(visibility, "visibility", Visibility.values),
        "primary_metric": validation.text(primary_metric, "primary_metric", 250),
    }
    owner = _team_for_new_model(user, team)
    try:
        with transaction.atomic():
            existing = _same_name(name)
            if existing is not None:
                # Only those who may read it learn that it exists.
                if access.model_level(user, existing) is None:
                    raise PermissionDenied(f"You may not create a model named '{name}'.")
                raise _taken(name, existing, user)
            model = RegisteredModel.objects.create(name=name, created_by=user, team=owner, **fields)
            record_event(
                "model.created",
                user,
                model=model,
                data={
                    "description": model.description,
                    "team": owner.name,
                    "visibility": model.visibility,
                },
            )
    except IntegrityError:  # a concurrent create of the same name won
        raise Conflict(f"Model '{name}' already exists.", {"model": name}) from None
    return model


def update_model(model: RegisteredModel, user, **changes) -> RegisteredModel:
    access.require_model(user, model, access.WRITE)
    checks = {
        "description": lambda v: validation.text(v, "description"),
        "tags": lambda v: validation.string_map(v, "tags"),
        "primary_metric": lambda v: validation.text(v, "primary_metric", 250),
    }
    with transaction.atomic():
        model = for_update(RegisteredModel).get(pk=model.pk)
        before, after = {}, {}
        for field, value in changes.items():
            value = checks[field](value)
            if getattr(model, field) != value:
                before[field], after[field] = getattr(model, field), value
                setattr(model, field, value)
        if after:
            model.save()
            record_event(
                "model.updated", user, model=model, data={"before": before, "after": after}
            )
    return model


def rename_model(model: RegisteredModel, user, new_name: str) -> RegisteredModel:
    """A new name for the model; its versions, aliases and history move with it.

    Refused while the model is live in an environment: deployments resolve it by name,
    and a rename would silently cut them off. Past events keep the name they were written
    under (the audit log is append-only); `model.renamed` links the two.
    """
    access.require_model(user, model, access.WRITE)
    new_name = validation.model_name(new_name)
    try:
        with transaction.atomic():
            model = for_update(RegisteredModel).get(pk=model.pk)
            if new_name == model.name:
                return model
            live = live_environments(model)
            if live:
                raise Conflict(
                    f"Model '{model.name}' is live in {', '.join(live)}; deployments resolve it "
                    "by name, so it cannot be renamed.",
                    {"environments": live},
                )
            existing = _same_name(new_name, besides=model)
            if existing is not None:
                raise _taken(new_name, existing, user)
            old_name, model.name = model.name, new_name
            model.save()
            record_event("model.renamed", user, model=model, data={"from": old_name})
    except IntegrityError:  # a concurrent create or rename took the name
        raise Conflict(f"Model '{new_name}' already exists.", {"model": new_name}) from None
    return model


def delete_model(model: RegisteredModel, user) -> None:
    access.require_model(user, model)
    if not access.is_admin(user):
        raise PermissionDenied("Only an administrator may delete a model.")
    with transaction.atomic():
        model = for_update(RegisteredModel).get(pk=model.pk)
        live = live_environments(model)
        if live:
            raise Conflict(
                f"Model '{model.name}' is live in {', '.join(live)}; it cannot be deleted.",
                {"environments": live},
            )
        record_event(
            "model.deleted", user, model=model, data={"versions": model.last_version_number}
        )
        model.delete()
        gitmirror.request_sync()  # the mirror commits the removal


def set_visibility(model: RegisteredModel, user, visibility: str) -> RegisteredModel:
    access.require_model(user, model, access.MANAGE)
    visibility = validation.choice(visibility, "visibility", Visibility.values)
    with transaction.atomic():
        model = for_update(RegisteredModel).get(pk=model.pk)
        if model.visibility != visibility:
            before, model.visibility = model.visibility, visibility
            model.save(update_fields=["visibility", "updated_at"])
            record_event(
                "model.visibility_changed",
                user,
                model=model,
                data={"before": before, "after": visibility},
            )
    return model


def move_to_team(model: RegisteredModel, user, team: str) -> RegisteredModel:
    """Hand the model to another team: its maintainers (or an admin) give it away, and
    the receiving team's maintainers (or an admin) take it."""
    access.require_model(user, model, access.MANAGE)
    target = get_team(validation.team_name(team))
    if not access.is_admin(user) and access.team_roles(user).get(target.pk) != "maintainer":
        raise PermissionDenied(f"Only maintainers of team '{target.name}' may take a model in.")
    with transaction.atomic():
        model = for_update(RegisteredModel).select_related("team").get(pk=model.pk)
        if model.team_id != target.pk:
            before = model.team.name
            model.team = target
            model.save(update_fields=["team", "updated_at"])
            record_event(
                "model.team_changed", user, model=model, data={"before": before, "after": team}
            )
    return model


def grants(model: RegisteredModel, user) -> list[ModelGrant]:
    access.require_model(user, model)
    return list(model.grants.select_related("team", "user"))


def grant_access(
    model: RegisteredModel, user, level: str, *, team: str | None = None, username: str = ""
) -> ModelGrant:
    """Give another team or one user `level` (read, write or manage) on this one model."""
    from django.contrib.auth import get_user_model

    access.require_model(user, model, access.MANAGE)
    level = validation.choice(level, "level", ModelGrant.Level.values)
    if (team is None) == (not username):
        raise InvalidInput("A grant names either a 'team' or a 'user'.")
    grantee = {}
    if team is not None:
        grantee["team"] = get_team(validation.team_name(team))
    else:
        found = get_user_model().objects.filter(username=username).first()
        if found is None:
            raise NotFound(f"User '{username}' does not exist.", {"user": username})
        grantee["user"] = found
    with transaction.atomic():
        grant, created = ModelGrant.objects.select_for_update().get_or_create(
            model=model, **grantee, defaults={"level": level, "created_by": user}
        )
        before = None if created else grant.level
        if created or grant.level != level:
            grant.level = level
            grant.save(update_fields=["level"])
            record_event(
                "model.access_granted",
                user,
                model=model,
                data={"grantee": grant.grantee, "level": level, "before": before},
            )
    return grant


def revoke_access(model: RegisteredModel, user, grant_id: int) -> None:
    access.require_model(user, model, access.MANAGE)
    with transaction.atomic():
        grant = model.grants.select_related("team", "user").filter(pk=grant_id).first()
        if grant is None:
            raise NotFound(f"Grant {grant_id} does not exist on model '{model.name}'.")
        record_event(
            "model.access_revoked",
            user,
            model=model,
            data={"grantee": grant.grantee, "level": grant.level},
        )
        grant.delete()
