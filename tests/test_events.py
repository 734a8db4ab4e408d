"""The audit log: append-only, written with the change, filterable."""

import pytest
from django.db import transaction

from registry.models import AppendOnlyError, Event
from registry.services.registered_models import create_model


def test_events_cannot_be_changed_or_deleted(alice_api, model):
    event = Event.objects.get(type="model.created")
    event.type = "something.else"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()


def test_an_event_is_rolled_back_with_its_change(alice):
    with pytest.raises(RuntimeError), transaction.atomic():
        create_model(alice, "doomed")
        raise RuntimeError("the surrounding transaction fails")
    assert not Event.objects.filter(model_name="doomed").exists()


def test_events_are_filtered_newest_first(alice_api, admin_api, model):
    alice_api.post("/api/v1/models/", {"name": "other"}, format="json")
    admin_api.patch(f"/api/v1/models/{model}/", {"description": "x"}, format="json")

    def types(query=""):
        response = alice_api.get(f"/api/v1/events/{query}")
        assert response.status_code == 200, response.content
        return [(e["type"], e["model"], e["actor"]) for e in response.json()["results"]]

    assert types("?model=fraud") == [
        ("model.updated", "fraud", "admin"),
        ("model.created", "fraud", "alice"),
    ]
    assert types("?actor=admin&type=model.updated") == [("model.updated", "fraud", "admin")]
    assert types("?since=2999-01-01T00:00:00Z") == []
    assert len(types("?since=2000-01-01T00:00:00Z&type=model.created")) == 2
    assert alice_api.get("/api/v1/events/?since=yesterday").status_code == 400
