"""Liveness, readiness, and the OpenAPI document."""

from rest_framework.test import APIClient


def test_healthz_answers_without_login(db):
    response = APIClient().get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_checks_database_broker_and_storage(db):
    response = APIClient().get("/readyz")
    assert response.json()["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}
    assert response.status_code == 200


def test_readyz_says_which_part_is_down(db, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    response = APIClient().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"].startswith("error")


def test_the_schema_describes_every_api_path(db):
    response = APIClient().get("/api/v1/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in [
        "/api/v1/models/",
        "/api/v1/models/{name}/versions/{ref}/files/{path}",
        "/api/v1/models/{name}/aliases/{alias}/",
        "/api/v1/events/",
        "/api/v1/auth/tokens/",
        "/api/v1/me/",
        "/api/v1/models/{name}/versions/{ref}/finalize/",
    ]:
        assert path in paths, path
    schemes = response.json()["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token from POST /api/v1/auth/tokens/.",
    }
    assert response.json()["paths"]["/api/v1/models/"]["get"]["security"]
    assert APIClient().get("/api/v1/docs/").status_code == 200


def test_created_resources_link_to_their_next_operations(db):
    """Each link names a real operation and fills exactly that operation's path parameters."""
    schema = APIClient().get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    operations = {
        op["operationId"]: (path, op)
        for path, item in schema["paths"].items()
        for op in item.values()
    }
    links = {
        source: operations[source][1]["responses"]["201"].get("links", {})
        for source in ("models_create", "versions_create", "promotions_request", "webhooks_create")
    }
    assert all(links.values()), links
    for source, targets in links.items():
        for target, link in targets.items():
            path, op = operations[link["operationId"]]
            wanted = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert set(link["parameters"]) == wanted, (source, target, path)
    version_links = links["versions_create"]
    assert version_links["versions_finalize"]["parameters"]["ref"] == "$response.body#/version"
