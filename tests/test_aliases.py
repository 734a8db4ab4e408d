"""Unprotected aliases: set, move with compare-and-set, delete; environments refuse."""

from registry.models import Environment, Event, ModelVersion

from .conftest import upload_version


def ready_versions(client, model, count):
    for index in range(count):
        upload_version(client, model, {"m.bin": str(index).encode()})
    ModelVersion.objects.update(state="ready")


def test_an_alias_moves_and_every_move_is_audited(alice_api, model):
    ready_versions(alice_api, model, 2)
    url = f"/api/v1/models/{model}/aliases/champion/"
    assert alice_api.put(url, {"version": 1}, format="json").json()["version"] == 1
    moved = alice_api.put(url, {"version": 2}, format="json").json()
    assert moved["version"] == 2 and moved["updated_by"] == "alice" and moved["protected"] is False
    moves = Event.objects.filter(type="alias.moved").order_by("id")
    assert [(e.data["from"], e.data["to"]) for e in moves] == [(None, 1), (1, 2)]
    listing = alice_api.get(f"/api/v1/models/{model}/aliases/").json()
    assert [(a["alias"], a["version"]) for a in listing] == [("champion", 2)]
    assert alice_api.get(f"/api/v1/models/{model}/").json()["aliases"] == {"champion": 2}


def test_if_match_refuses_an_alias_that_moved_meanwhile(alice_api, model):
    ready_versions(alice_api, model, 3)
    url = f"/api/v1/models/{model}/aliases/champion/"
    alice_api.put(url, {"version": 1}, format="json")
    assert alice_api.put(url, {"version": 2}, format="json", HTTP_IF_MATCH='"1"').status_code == 200
    stale = alice_api.put(url, {"version": 3}, format="json", HTTP_IF_MATCH='"1"')
    assert stale.status_code == 412
    assert stale.json()["error"]["code"] == "precondition_failed"
    assert (
        alice_api.get(url.replace("aliases/champion/", "versions/@champion/")).json()["version"]
        == 2
    )


def test_only_ready_versions_carry_aliases(alice_api, model):
    upload_version(alice_api, model, {"m.bin": b"m"})
    response = alice_api.put(
        f"/api/v1/models/{model}/aliases/champion/", {"version": 1}, format="json"
    )
    assert response.status_code == 409


def test_bad_alias_names_and_bodies_are_refused(alice_api, model):
    ready_versions(alice_api, model, 1)
    for alias, body in [
        ("Upper", {"version": 1}),
        ("1st", {"version": 1}),
        ("ok", {"version": "1"}),
        ("ok", {}),
        ("ok", {"version": 99}),
    ]:
        response = alice_api.put(f"/api/v1/models/{model}/aliases/{alias}/", body, format="json")
        assert response.status_code in (400, 404), (alias, body)


def test_an_environment_alias_is_moved_only_by_a_promotion(alice_api, model):
    ready_versions(alice_api, model, 1)
    Environment.objects.create(name="production")
    url = f"/api/v1/models/{model}/aliases/production/"
    response = alice_api.put(url, {"version": 1}, format="json")
    assert response.status_code == 409
    assert "use a promotion" in response.json()["error"]["message"]
    assert alice_api.delete(url).status_code == 409


def test_deleting_an_alias(alice_api, model):
    ready_versions(alice_api, model, 1)
    url = f"/api/v1/models/{model}/aliases/champion/"
    alice_api.put(url, {"version": 1}, format="json")
    assert alice_api.delete(url).status_code == 204
    assert alice_api.delete(url).status_code == 404
    assert Event.objects.filter(type="alias.deleted").count() == 1
