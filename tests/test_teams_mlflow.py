"""Teams through MLflow's own clients: searches return only what the caller may see, and
MLflow 3's permission calls (`get_app_client("basic-auth")`) change who may see it."""

import pytest

from .conftest import _make_user, client_for, join_team
from .test_mlflow import as_basic, as_token

mlflow = pytest.importorskip("mlflow")
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.server import get_app_client  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def teams_world(db):
    ann = _make_user("ann", team=None)
    ben = _make_user("ben", team=None)
    join_team(ann, "maintainer", "team-a")
    join_team(ben, "contributor", "team-b")
    api = client_for(ann)
    for name, visibility in (("fraud", "team"), ("scores", "internal")):
        made = api.post("/api/v1/models/", {"name": name, "visibility": visibility}, format="json")
        assert made.status_code == 201, made.content
    made = client_for(ben).post("/api/v1/models/", {"name": "churn"}, format="json")
    assert made.status_code == 201
    return ann, ben


def test_search_registered_models_returns_only_what_the_caller_may_see(
    live_server, monkeypatch, teams_world
):
    ann, ben = teams_world
    as_ann = as_token(monkeypatch, live_server, ann)
    assert sorted(m.name for m in as_ann.search_registered_models()) == ["fraud", "scores"]
    as_ben = as_token(monkeypatch, live_server, ben)
    assert sorted(m.name for m in as_ben.search_registered_models()) == ["churn", "scores"]
    assert [m.name for m in as_ben.search_registered_models("name LIKE 'fr%'")] == []
    with pytest.raises(MlflowException) as info:
        as_ben.get_registered_model("fraud")
    assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_mlflow_permission_calls_change_access(live_server, monkeypatch, teams_world):
    _, ben = teams_world
    as_basic(monkeypatch, live_server, "ann", "ann-password-1")
    auth = get_app_client("basic-auth", tracking_uri=live_server.url)
    before = auth.get_user_permission("ben", "registered_model", "fraud")
    assert (before.allowed, before.permission) == (False, "NO_PERMISSIONS")

    auth.grant_user_permission("ben", "registered_model", "fraud", "READ")
    as_ben = as_token(monkeypatch, live_server, ben)
    assert "fraud" in [m.name for m in as_ben.search_registered_models()]
    with pytest.raises(MlflowException):  # READ does not write
        as_ben.update_registered_model("fraud", description="mine")

    as_basic(monkeypatch, live_server, "ann", "ann-password-1")
    auth.grant_user_permission("ben", "registered_model", "fraud", "EDIT")
    now = auth.get_user_permission("ben", "registered_model", "fraud")
    assert (now.allowed, now.permission) == (True, "EDIT")
    as_ben = as_token(monkeypatch, live_server, ben)
    assert as_ben.update_registered_model("fraud", description="mine").description == "mine"

    as_basic(monkeypatch, live_server, "ann", "ann-password-1")
    auth.revoke_user_permission("ben", "registered_model", "fraud")
    as_ben = as_token(monkeypatch, live_server, ben)
    assert "fraud" not in [m.name for m in as_ben.search_registered_models()]

    # ben may not hand out access to a model that is not his.
    as_basic(monkeypatch, live_server, "ben", "ben-password-1")
    with pytest.raises(MlflowException) as info:
        get_app_client("basic-auth", tracking_uri=live_server.url).grant_user_permission(
            "ben", "registered_model", "fraud", "MANAGE"
        )
    assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"
