"""The audit log: one append-only record per change, in the change's own transaction."""

from typing import Any

from django.db import transaction

from registry.models import Event, ModelVersion, RegisteredModel


def record_event(
    type: str,
    actor,
    *,
    model: RegisteredModel | None = None,
    version: ModelVersion | None = None,
    data: dict[str, Any] | None = None,
) -> Event:
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("record_event must run inside the transaction of the change")
    if version is not None and model is None:
        model = version.model
    actor = actor if getattr(actor, "is_authenticated", False) else None
    event = Event.objects.create(
        type=type,
        actor=actor,
        actor_name=actor.get_username() if actor else "system",
        model=model,
        model_name=model.name if model else "",
        version_number=version.number if version else None,
        data=data or {},
    )
    from .webhooks import fan_out  # webhooks record events too

    fan_out(event)
    return event
