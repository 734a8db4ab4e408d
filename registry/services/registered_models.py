"""Creating, changing and deleting registered models."""

from django.db import IntegrityError, transaction

from registry.errors import Conflict, NotFound, PermissionDenied
from registry.models import RegisteredModel

from . import access, gitmirror, validation
from .environments import live_environments
from .events import record_event
from .locking import for_update


def get_model(name: str) -> RegisteredModel:
    try:
        return RegisteredModel.objects.get(name=name)
    except RegisteredModel.DoesNotExist:
        raise NotFound(f"Model '{name}' does not exist.", {"model": name}) from None


def create_model(
    user,
    name: str,
    *,
    description: str = "",
    tags: dict | None = None,
    owner_team: str = "",
    primary_metric: str = "",
) -> RegisteredModel:
    require(user, access.WRITE)
    name = validation.model_name(name)
    fields = {
        "description": validation.text(description, "description"),
        "tags": validation.string_map(tags, "tags"),
        "owner_team": validation.text(owner_team, "owner_team", 128),
        "primary_metric": validation.text(primary_metric, "primary_metric", 250),
    }
    try:
        with transaction.atomic():
            if RegisteredModel.objects.filter(name=name).exists():
                raise Conflict(f"Model '{name}' already exists.", {"model": name})
            model = RegisteredModel.objects.create(name=name, created_by=user, **fields)
            record_event(
                "model.created", user, model=model, data={"description": model.description}
            )
    except IntegrityError:  # a concurrent create of the same name won
        raise Conflict(f"Model '{name}' already exists.", {"model": name}) from None
    return model


def update_model(model: RegisteredModel, user, **changes) -> RegisteredModel:
    require(user, access.WRITE)
    checks = {
        "description": lambda v: validation.text(v, "description"),
        "tags": lambda v: validation.string_map(v, "tags"),
        "owner_team": lambda v: validation.text(v, "owner_team", 128),
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
    require(user, access.WRITE)
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
            if RegisteredModel.objects.filter(name=new_name).exists():
                raise Conflict(f"Model '{new_name}' already exists.", {"model": new_name})
            old_name, model.name = model.name, new_name
            model.save()
            record_event("model.renamed", user, model=model, data={"from": old_name})
    except IntegrityError:  # a concurrent create or rename took the name
        raise Conflict(f"Model '{new_name}' already exists.", {"model": new_name}) from None
    return model


def delete_model(model: RegisteredModel, user) -> None:
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


def require(user, level: str) -> None:
    """Refuse a user whose role does not grant `level` (scopes are checked at the door)."""
    if level not in access.role_scopes(user):
        raise PermissionDenied(f"Your role does not allow this ('{level}' is needed).")
