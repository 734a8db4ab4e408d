"""Movable names for versions. Protected ones (environments) move only by promotion."""

from django.db import IntegrityError, transaction
from django.utils import timezone

from registry.errors import Conflict, NotFound, PreconditionFailed
from registry.models import Alias, ModelVersion, RegisteredModel

from . import access, validation
from .environments import is_protected
from .events import record_event
from .locking import for_update


def set_alias(
    model: RegisteredModel,
    user,
    name: str,
    version_number: int,
    *,
    expected_version: int | None = None,
) -> Alias:
    """Point `name` at a ready version; with `expected_version`, only if it has not moved."""
    access.require_model(user, model, access.WRITE)
    validation.alias_name(name)
    if is_protected(name):
        raise Conflict(
            f"'{name}' is a protected environment: use a promotion.",
            {"alias": name, "environment": name},
        )
    if isinstance(version_number, bool) or not isinstance(version_number, int):
        raise validation.InvalidInput("'version' must be a version number.")
    try:
        with transaction.atomic():
            return _move(model, user, name, version_number, expected_version)
    except IntegrityError:  # two first-time sets of the same alias raced
        raise Conflict(f"Alias '{name}' was changed concurrently; try again.") from None


def _move(model, user, name, version_number, expected_version) -> Alias:
    version = ModelVersion.objects.filter(model=model, number=version_number).first()
    if version is None:
        raise NotFound(f"Version {version_number} of model '{model.name}' does not exist.")
    if version.state != ModelVersion.State.READY:
        raise Conflict(
            f"Version {version_number} is {version.state}; only a ready version "
            "can carry an alias.",
            {"state": version.state},
        )
    alias = for_update(Alias).filter(model=model, name=name).first()
    current = alias.version.number if alias else None
    if expected_version is not None and current != expected_version:
        raise PreconditionFailed(
            f"Alias '{name}' points at {current}, not {expected_version}.",
            {"alias": name, "current": current},
        )
    if alias is None:
        alias = Alias.objects.create(model=model, name=name, version=version, updated_by=user)
    elif alias.version_id != version.pk:
        alias.version, alias.updated_by, alias.updated_at = version, user, timezone.now()
        alias.save()
    else:
        return alias
    record_event(
        "alias.moved",
        user,
        version=version,
        data={"alias": name, "from": current, "to": version.number},
    )
    return alias


def delete_alias(model: RegisteredModel, user, name: str) -> None:
    access.require_model(user, model, access.WRITE)
    if is_protected(name):
        raise Conflict(f"'{name}' is a protected environment: use a promotion.", {"alias": name})
    with transaction.atomic():
        alias = for_update(Alias).filter(model=model, name=name).first()
        if alias is None:
            raise NotFound(f"Alias '{name}' of model '{model.name}' does not exist.")
        record_event(
            "alias.deleted",
            user,
            version=alias.version,
            data={"alias": name, "from": alias.version.number},
        )
        alias.delete()
