"""Hostile input at every JSON door gets a 400 with a message: never a 500, never a write.

The five inputs that once answered 500 (100k-deep nesting, a lone surrogate, 1e999999, a
year-0 or out-of-range `?since=`, a surrogate echoed into an error) are tried as attacks,
then hypothesis mixes them (and their kind) into otherwise valid bodies.
"""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from registry.models import ApiToken, Environment, Event, Monitor, RegisteredModel, Webhook
from registry.services.tokens import create_token

from .conftest import client_for

DEEP = "[" * 100_000 + "]" * 100_000
HOSTILE = {
    "deep nesting": DEEP,
    "deep inside a field": '{"name": "x", "tags": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}",
    "lone surrogate": '{"name": "\\ud800", "description": "d"}',
    "surrogate in an echoed field": '{"name": "m", "bogus\\udfff": 1}',
    "huge exponent": '{"name": "x", "description": "d", "tags": {"a": 1e999999}}',
    "negative huge exponent": '{"name": "x", "metrics": {"a": -1e999999}}',
    "NaN literal": '{"name": "x", "tags": {"a": NaN}}',
    "NUL in text": '{"name": "nul", "description": "a\\u0000b", "url": "http://a\\u0000"}',
    "5000-digit integer": '{"name": "x", "tags": {"a": ' + "9" * 5000 + "}}",
}
DOORS = [
    ("post", "/api/v1/models/"),
    ("patch", "/api/v1/models/fraud/"),
    ("post", "/api/v1/models/fraud/versions/"),
    ("post", "/api/v1/environments/"),
    ("post", "/api/v1/webhooks/"),
    ("post", "/api/v1/monitors/"),
    ("post", "/api/v1/auth/tokens/"),
    ("post", "/api/v1/monitoring/predictions/"),
    ("post", "/api/2.0/mlflow/registered-models/create"),
    ("post", "/api/2.0/mlflow/model-versions/create"),
]
BAD_TIMES = ["0000-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]


def _stored() -> tuple[int, ...]:
    return tuple(
        m.objects.count() for m in (RegisteredModel, Environment, Webhook, Monitor, ApiToken)
    )


class _Clients:
    """The admin for every door but ingest, which takes only an ingest token."""

    def __init__(self, admin, ingest):
        self.admin, self.ingest = admin, ingest

    def __getattr__(self, method):
        return getattr(self.admin, method)

    def call(self, method: str, url: str, **kwargs):
        client = self.ingest if "/monitoring/predictions/" in url else self.admin
        return getattr(client, method)(url, **kwargs)


@pytest.fixture
def admin_client(admin_user, model):
    _, secret = create_token(admin_user, "serving", ["ingest"], model="fraud")
    ingest = APIClient(HTTP_AUTHORIZATION=f"Bearer {secret}")
    admin = client_for(admin_user)
    for client in (admin, ingest):
        client.raise_request_exception = False  # a 500 must show as a status, not an exception
    return _Clients(admin, ingest)


@pytest.mark.django_db
@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_json_gets_400_with_a_message_and_stores_nothing(admin_client, kind):
    before, events = _stored(), Event.objects.count()
    for method, url in DOORS:
        response = admin_client.call(
            method, url, data=HOSTILE[kind], content_type="application/json"
        )
        assert response.status_code == 400, (url, response.status_code, response.content[:300])
        body = response.json()
        message = body["error"]["message"] if "error" in body else body["message"]
        assert message, (url, body)
    assert _stored() == before
    assert Event.objects.count() == events


@pytest.mark.django_db
def test_hostile_metadata_in_a_multipart_upload_gets_400(admin_client):
    for kind in ("deep inside a field", "lone surrogate", "huge exponent"):
        response = admin_client.post(
            "/api/v1/models/fraud/versions/",
            {"metadata": HOSTILE[kind].replace('"name": "x", ', ""), "files": []},
        )
        assert response.status_code == 400, (kind, response.content[:300])
    assert not RegisteredModel.objects.get(name="fraud").versions.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("moment", BAD_TIMES)
def test_an_out_of_range_since_is_a_400(admin_client, moment):
    for url in (
        "/api/v1/events/",
        "/api/v1/models/fraud/versions/1/monitoring/",
    ):
        response = admin_client.get(url, {"since": moment})
        assert response.status_code in (400, 404), (url, response.status_code)
        if response.status_code == 400:
            assert "RFC 3339" in response.json()["error"]["message"]
    assert admin_client.get("/api/v1/events/", {"since": moment}).status_code == 400


@pytest.mark.django_db
def test_an_out_of_range_record_time_is_a_400_naming_the_record(admin_user, model):
    client = client_for(admin_user)
    client.raise_request_exception = False
    record = {"model": "fraud", "version": 1, "environment": "staging", "request_id": "r1"}
    for moment in BAD_TIMES:
        body = {"records": [{**record, "at": moment, "inputs": {"a": 1}}]}
        response = client.post("/api/v1/monitoring/predictions/", body, format="json")
        assert response.status_code in (400, 403), response.content[:300]


# --- hypothesis: the same kinds, anywhere in a body ------------------------------------

_hostile_atoms = st.sampled_from(
    [
        "1e999999",
        "-1e999999",
        "NaN",
        "Infinity",
        "9" * 4400,
        '"\\ud800"',
        '"\\udc00x"',
        '"a\\ud83d"',
        "[" * 3000 + "]" * 3000,
        '"\\u0000"',
    ]
)
_keys = st.sampled_from(
    ["name", "description", "tags", "metrics", "params", "lineage", "scopes", "url", "gates"]
)


@st.composite
def _bodies(draw) -> str:
    """A JSON object text whose fields are ordinary values or a hostile atom, nested."""
    fields = draw(st.dictionaries(_keys, st.just(None), min_size=1, max_size=4))
    parts = []
    for key in fields:
        atom = draw(_hostile_atoms) if draw(st.booleans()) else json.dumps(draw(st.text()))
        depth = draw(st.integers(0, 3))
        parts.append(f'"{key}": ' + '{"k": ' * depth + atom + "}" * depth)
    return "{" + ", ".join(parts) + "}"


@pytest.mark.django_db
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=_bodies(), door=st.sampled_from(DOORS))
def test_fuzzed_hostile_bodies_never_get_a_500(admin_client, body, door):
    method, url = door
    response = admin_client.call(method, url, data=body, content_type="application/json")
    assert response.status_code < 500, (url, body[:200], response.content[:300])


@pytest.mark.django_db
def test_a_nul_in_a_query_parameter_is_a_400(admin_client):
    for url, field in (("/api/v1/models/", "search"), ("/api/v1/events/", "actor")):
        response = admin_client.get(url, {field: "a\x00b"})
        assert response.status_code in (200, 400), (url, response.status_code)
        if response.status_code == 400:
            assert "NUL" in response.json()["error"]["message"]


@pytest.mark.django_db
def test_megabytes_of_params_are_a_413_and_nothing_is_stored(admin_client, settings):
    """Each param within its own limit, 4.5 MB together: refused whole."""
    params = {f"p{i}": "x" * 4500 for i in range(1000)}
    files = [{"path": "m.bin", "size": 1, "sha256": "0" * 64}]
    response = admin_client.post(
        "/api/v1/models/fraud/versions/", {"params": params, "files": files}, format="json"
    )
    assert response.status_code == 413, response.content[:300]
    assert "MODELGATE_MAX_METADATA_BYTES" in response.json()["error"]["message"]
    assert not RegisteredModel.objects.get(name="fraud").versions.exists()

    settings.MODELGATE_MAX_METADATA_BYTES = 2000
    small = {"params": {"a": "1"}, "files": files}
    created = admin_client.post("/api/v1/models/fraud/versions/", small, format="json")
    assert created.status_code == 201, created.content
    url = f"/api/v1/models/fraud/versions/{created.json()['version']}/"
    grown = admin_client.patch(url, {"tags": {"big": "y" * 3000}}, format="json")
    assert grown.status_code == 413
    assert admin_client.get(url).json()["tags"] == {}
