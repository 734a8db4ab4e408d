"""Registered models over the API."""

from registry.models import Event


def test_creating_a_model_records_an_event(alice_api):
    response = alice_api.post(
        "/api/v1/models/",
        {"name": "churn", "description": "Who leaves", "tags": {"team": "growth"}},
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "churn" and body["latest_version"] is None and body["aliases"] == {}
    event = Event.objects.get(type="model.created")
    assert (event.model_name, event.actor_name) == ("churn", "alice")


def test_a_duplicate_name_is_a_conflict(alice_api, model):
    response = alice_api.post("/api/v1/models/", {"name": model}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


def test_bad_names_and_fields_are_refused_with_a_message(alice_api):
    for body in [
        {"name": "a/b"},
        {"name": "..lead"},
        {"name": "x" * 257},
        {"name": ""},
        {"name": " a b"},
        {},
        {"name": "ok", "tags": {"k": 1}},
        {"name": "ok", "extra": 1},
        {"name": "ok", "description": 5},
        ["not", "an", "object"],
    ]:
        response = alice_api.post("/api/v1/models/", body, format="json")
        assert response.status_code == 400, body
        assert response.json()["error"]["message"]
    assert alice_api.get("/api/v1/models/").json()["results"] == []


def test_models_are_searched_by_name_description_and_tag(alice_api):
    for name, description, tags in [
        ("fraud-cards", "Card fraud", {"team": "risk"}),
        ("churn", "Who leaves", {"team": "growth"}),
        ("fraud-wire", "Wire transfers", {"team": "risk"}),
    ]:
        alice_api.post(
            "/api/v1/models/",
            {"name": name, "description": description, "tags": tags},
            format="json",
        )

    def names(query):
        return [m["name"] for m in alice_api.get(f"/api/v1/models/{query}").json()["results"]]

    assert names("?search=fraud") == ["fraud-cards", "fraud-wire"]
    assert names("?search=LEAVES") == ["churn"]
    assert names("?tag=team:risk") == ["fraud-cards", "fraud-wire"]
    assert names("?tag=team:risk&search=wire") == ["fraud-wire"]
    assert names("?ordering=-name") == ["fraud-wire", "fraud-cards", "churn"]
    assert alice_api.get("/api/v1/models/?ordering=password").status_code == 400
    assert alice_api.get("/api/v1/models/?tag=nocolon").status_code == 400


def test_pages_are_capped_and_linked(alice_api):
    for index in range(7):
        alice_api.post("/api/v1/models/", {"name": f"m{index}"}, format="json")
    first = alice_api.get("/api/v1/models/?page_size=5").json()
    assert len(first["results"]) == 5 and first["next"]
    second = alice_api.get(first["next"]).json()
    assert [m["name"] for m in second["results"]] == ["m5", "m6"] and second["next"] is None
    assert alice_api.get("/api/v1/models/?page_size=abc").status_code == 400


def test_a_model_is_updated_with_before_and_after_in_the_audit_log(alice_api, model):
    response = alice_api.patch(f"/api/v1/models/{model}/", {"description": "New"}, format="json")
    assert response.status_code == 200 and response.json()["description"] == "New"
    event = Event.objects.get(type="model.updated")
    assert event.data == {"before": {"description": "Fraud"}, "after": {"description": "New"}}
    assert (
        alice_api.patch(f"/api/v1/models/{model}/", {"name": "x"}, format="json").status_code == 400
    )


def test_an_unknown_model_is_a_json_404(alice_api):
    response = alice_api.get("/api/v1/models/nope/")
    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "not_found",
        "message": "Model 'nope' does not exist.",
        "details": {"model": "nope"},
    }
    assert alice_api.get("/api/v1/no-such-endpoint/").json()["error"]["code"] == "not_found"
