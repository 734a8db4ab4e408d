"""Names and paths as attacks: a trailing newline, Unicode that turns into '..', invisible
characters. Refused at the door; stored ones from before are listed by `check_names`."""

import pytest
from django.core.management import CommandError, call_command

from registry.models import Alias, Environment, RegisteredModel, VersionFile

from .conftest import declare

pytestmark = pytest.mark.django_db


def test_a_model_name_with_a_trailing_newline_is_refused(alice_api):
    response = alice_api.post("/api/v1/models/", {"name": "fraud-detector\n"}, format="json")
    assert response.status_code == 400, response.content
    assert not RegisteredModel.objects.exists()


def test_a_plain_alias_cannot_shadow_a_protected_environment_with_a_newline(alice_api, model):
    Environment.objects.create(name="production")
    response = alice_api.put(
        "/api/v1/models/fraud/aliases/production%0A/", {"version": 1}, format="json"
    )
    assert response.status_code in (400, 404), response.content
    assert not Alias.objects.exists()


@pytest.mark.parametrize(
    "path",
    [
        "\u2025/x",  # TWO DOT LEADER: NFKC gives "../x"
        "..\uff0fx",  # FULLWIDTH SOLIDUS: NFKC gives "../x"
        "\uff0e\uff0e/x",  # FULLWIDTH FULL STOPs
        "model/ /weights.bin",  # a whitespace-only segment
        "model/\u3000/weights.bin",  # an ideographic space segment
        "evil\u202egnp.exe",  # RIGHT-TO-LEFT OVERRIDE: shows as "evilexe.png"
        "we\u200bights.bin",  # ZERO WIDTH SPACE
        "\ufeffmodel.bin",  # BYTE ORDER MARK
        "model.bin\n",
    ],
)
def test_a_file_path_that_could_look_or_resolve_differently_is_refused(alice_api, model, path):
    response = declare(alice_api, model, {path: b"x"})
    assert response.status_code == 400, (path, response.content)
    assert "Invalid file path" in response.json()["error"]["message"]
    assert not VersionFile.objects.exists()


def test_ordinary_unicode_paths_still_pass(alice_api, model):
    response = declare(alice_api, model, {"modèle/权重 v2.bin": b"x"})
    assert response.status_code == 201, response.content


def test_check_names_lists_stored_names_that_no_longer_pass(alice_api, model, capsys):
    call_command("check_names")
    assert "Every stored name passes." in capsys.readouterr().out
    RegisteredModel.objects.filter(name="fraud").update(name="fraud\n")
    assert declare(alice_api, "fraud\n", {"ok.bin": b"x"}).status_code in (400, 404)
    number = RegisteredModel.objects.get().versions.create(number=1, state="ready").number
    version = RegisteredModel.objects.get().versions.get(number=number)
    VersionFile.objects.create(version=version, path="a/\u200b/b", size=1, sha256="0" * 64)
    with pytest.raises(CommandError, match="2 stored name"):
        call_command("check_names")
    out = capsys.readouterr().out
    assert "model 'fraud\\n'" in out
    assert "file 'a/\\u200b/b' in fraud\n v1" in out
    assert RegisteredModel.objects.get().name == "fraud\n"  # listed, never changed
