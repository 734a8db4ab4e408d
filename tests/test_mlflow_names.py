"""Model names as MLflow allows them ("Fraud Detector", "UpdateRMTest 2", "#1? 100%") through
every door: REST over real HTTP, the MLflow client and its artifact proxy, a page, the CLI,
the Git mirror as GTO reads it; and the hostile names that stay refused."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from django.db import IntegrityError, transaction

from registry.errors import Conflict
from registry.models import Environment, Event, ModelVersion, Promotion, RegisteredModel
from registry.names import in_uri
from registry.services import gitmirror, gitnames
from registry.services.registered_models import rename_model

from .conftest import default_team, token_for, upload_version
from .test_gitmirror import _ready_version
from .test_mlflow import as_token, error_code

mlflow = pytest.importorskip("mlflow")

MLFLOW_NAMES = [
    "Fraud Detector",
    "CreateRMTest",
    "UpdateRMTest 2",
    "Fraud #1? 100% (beta)",
    "modèle de fraude",
    "模型 v2",
    "a@b & c=d",
    "x" * 256,
]


def _url(name: str) -> str:
    return f"/api/v1/models/{quote(name, safe='')}/"


# --- the rules --------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("a/b", "'/' or ':'"),
        ("models:x", "'/' or ':'"),
        ("a\\b", "backslash"),
        (".", "'.'"),
        ("..hidden", "'..'"),
        (" Fraud", "space"),
        ("Fraud ", "space"),
        ("Fraud%20Detector", "percent-escape"),
        ("x%2F..%2Fstore", "percent-escape"),  # '/../' to a client decoding once more
        ("Fraud\u202eDetector", "U+202E"),  # RIGHT-TO-LEFT OVERRIDE
        ("Fraud\u200bDetector", "U+200B"),  # ZERO WIDTH SPACE
        ("\ufeffFraud", "U+FEFF"),  # BYTE ORDER MARK
        ("Fraud\x07", "U+0007"),
        ("Fraud\n", "U+000A"),
        ("Fraud\u3000Detector", "U+3000"),  # IDEOGRAPHIC SPACE
        ("\uff26raud", "NFKC"),  # FULLWIDTH F
        ("\u2025x", "NFKC"),  # TWO DOT LEADER: '..x'
        ("x" * 257, "256"),
    ],
)
def test_hostile_names_are_refused_with_a_clear_400(alice_api, name, why):
    response = alice_api.post("/api/v1/models/", {"name": name}, format="json")
    assert response.status_code == 400, (name, response.content)
    message = response.json()["error"]["message"]
    assert message.startswith("Invalid model name") and why in message, message
    assert not RegisteredModel.objects.exists()


def test_a_refused_name_is_echoed_only_when_it_can_be_written():
    from registry.errors import InvalidInput
    from registry.services import validation

    with pytest.raises(InvalidInput) as info:
        validation.model_name("lone\ud800")  # only a door that skips the JSON reader
    assert "U+D800" in info.value.message and info.value.details["name"] is None
    json.dumps(info.value.message, ensure_ascii=False).encode()


@pytest.mark.django_db
def test_names_differing_only_in_letter_case_cannot_both_exist(alice_api, alice):
    assert alice_api.post("/api/v1/models/", {"name": "Fraud"}, format="json").status_code == 201
    again = alice_api.post("/api/v1/models/", {"name": "FRAUD"}, format="json")
    assert again.status_code == 409, again.content
    assert "already exists as 'Fraud'" in again.json()["error"]["message"]
    assert alice_api.post("/api/v1/models/", {"name": "churn"}, format="json").status_code == 201
    assert alice_api.post("/api/v1/models/", {"name": "Ölmodell"}, format="json").status_code == 201
    assert alice_api.post("/api/v1/models/", {"name": "ölMODELL"}, format="json").status_code == 409
    churn = RegisteredModel.objects.get(name="churn")
    with pytest.raises(Conflict, match="already exists as 'Fraud'"):
        rename_model(churn, alice, "fraud")
    # A model may change the case of its own name.
    rename_model(RegisteredModel.objects.get(name="Fraud"), alice, "fRAUD")
    assert set(RegisteredModel.objects.values_list("name", flat=True)) == {
        "churn",
        "fRAUD",
        "Ölmodell",
    }
    # The database holds the rule too, whatever door a write comes through.
    with pytest.raises(IntegrityError), transaction.atomic():
        RegisteredModel.objects.create(name="FrAuD", created_by=alice, team=default_team())


# --- REST over real HTTP ----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_mlflow_names_round_trip_over_http_and_are_audited(live_server, alice, alice_api):
    api = httpx.Client(
        base_url=live_server.url, headers={"Authorization": f"Bearer {token_for(alice)}"}
    )
    for name in MLFLOW_NAMES:
        created = api.post("/api/v1/models/", json={"name": name})
        assert created.status_code == 201, (name, created.text)
        fetched = api.get(_url(name))
        assert fetched.status_code == 200, (name, fetched.text)
        assert fetched.json()["name"] == name
    assert api.get(_url("fraud detector")).status_code == 404  # case-sensitive, as in MLflow
    found = api.get("/api/v1/models/", params={"search": "FRAUD #1"}).json()["results"]
    assert [m["name"] for m in found] == ["Fraud #1? 100% (beta)"]

    # Versions: declared, uploaded, finalized and downloaded under the encoded name.
    name = "Fraud #1? 100% (beta)"
    number = upload_version(alice_api, quote(name, safe=""), {"w.bin": b"weights"})
    ModelVersion.objects.filter(model__name=name).update(state="ready")
    file = api.get(f"{_url(name)}versions/{number}/files/w.bin")
    assert (file.status_code, file.content) == (200, b"weights")
    events = Event.objects.filter(model_name=name).values_list("type", flat=True)
    assert {"model.created", "version.created"} <= set(events)
    audit = api.get("/api/v1/events/", params={"model": name}).json()["results"]
    assert audit and {event["model"] for event in audit} == {name}
    from registry.services.webhooks import payload

    sent = json.loads(json.dumps(payload(Event.objects.filter(model_name=name).first())))
    assert sent["model"] == name


# --- the MLflow client ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_mlflow_client_keeps_names_as_written(live_server, monkeypatch, alice, tmp_path):
    client = as_token(monkeypatch, live_server, alice)
    created = client.create_registered_model("CreateRMTest", tags={"k": "v"})
    assert created.name == "CreateRMTest"
    assert client.get_registered_model("CreateRMTest").name == "CreateRMTest"
    assert error_code(client.get_registered_model, "creatermtest") == "RESOURCE_DOES_NOT_EXIST"
    assert error_code(client.create_registered_model, "createRMtest") == ("RESOURCE_ALREADY_EXISTS")
    client.rename_registered_model("CreateRMTest", "UpdateRMTest 2")
    assert client.get_registered_model("UpdateRMTest 2").tags == {"k": "v"}
    client.create_registered_model("Salt AND Pepper")
    names = lambda found: [m.name for m in found]  # noqa: E731
    assert names(client.search_registered_models("name = 'UpdateRMTest 2'")) == ["UpdateRMTest 2"]
    assert names(client.search_registered_models("name ILIKE '%rmtest%'")) == ["UpdateRMTest 2"]
    assert names(client.search_registered_models("name LIKE '%rmtest%'")) == []
    assert names(client.search_registered_models("name = 'Salt AND Pepper'")) == ["Salt AND Pepper"]
    assert error_code(client.create_registered_model, "bad\u200bname") == (
        "INVALID_PARAMETER_VALUE"
    )

    # Artifacts under a name with '#', '?' and '%': its source URI escapes just those.
    name = "Fraud #1? 100%"
    client.create_registered_model(name)
    repo_put = httpx.Client(headers={"Authorization": f"Bearer {token_for(alice)}"})
    repo_put.put(
        f"{live_server.url}/api/2.0/mlflow-artifacts/artifacts/runs/9/w.bin", content=b"weights"
    ).raise_for_status()
    version = client.create_model_version(name, "mlflow-artifacts:/runs/9", await_creation_for=0)
    assert version.name == name
    ModelVersion.objects.filter(model__name=name).update(state="ready")
    uri = client.get_model_version_download_uri(name, version.version)
    artifacts = f"{live_server.url}/api/2.0/mlflow-artifacts/artifacts"
    assert uri == f"{artifacts}/modelgate/Fraud %231%3F 100%25/1"
    out = tmp_path / "out"
    mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(out))
    assert (out / "1" / "w.bin").read_bytes() == b"weights"  # the folder under its own name
    from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

    listed = [
        f.path for f in MlflowArtifactsRepository("mlflow-artifacts:/modelgate").list_artifacts()
    ]
    # MLflow's client refuses a listed path with '#': the listing leaves such names out.
    assert "Salt AND Pepper" in listed and not any("#" in path for path in listed)
    copy = client.create_model_version(
        "UpdateRMTest 2", f"models:/{in_uri(name)}/{version.version}", await_creation_for=0
    )
    stored = ModelVersion.objects.get(model__name="UpdateRMTest 2", number=int(copy.version))
    assert list(stored.files.values_list("path", flat=True)) == ["w.bin"]


# --- a page -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_pages_link_to_names_with_spaces_hashes_and_question_marks(alice_api, alice):
    from django.test import Client

    browser = Client()
    browser.force_login(alice)
    created = browser.post("/models/new/", {"name": "Fraud #2? <script>x"})
    assert created.status_code == 302, created.content
    location = "/models/Fraud%20%232%3F%20%3Cscript%3Ex/"
    assert created["Location"] == location
    page = browser.get(location).content.decode()
    assert "<title>Fraud #2? &lt;script&gt;x · Modelgate</title>" in page
    assert "<script>x" not in page
    listing = browser.get("/").content.decode()
    assert f'href="{location}"' in listing
    searched = browser.get("/", {"q": "fraud #2?"}).content.decode()
    assert f'href="{location}"' in searched
    assert location not in browser.get("/", {"q": "fraud #3"}).content.decode()
    number = upload_version(alice_api, quote("Fraud #2? <script>x", safe=""), {"w.bin": b"w"})
    version_page = browser.get(f"{location}versions/{number}/")
    assert version_page.status_code == 200
    body = version_page.content.decode()
    assert f'href="/api/v1{location}versions/{number}/files/w.bin"' in body


# --- the CLI ----------------------------------------------------------------------------


@pytest.mark.live
def test_the_cli_takes_such_names_as_arguments(transactional_db, live_server, alice, tmp_path):
    from .test_cli import MODELGATE, cli_env, files_of, run

    env = cli_env(
        tmp_path / "config", MODELGATE_URL=live_server.url, MODELGATE_TOKEN=token_for(alice)
    )
    name = "Fraud #1? 100% a@b"
    assert (
        run([MODELGATE, "models", "create", name], env).stdout.strip() == f"Created model {name}."
    )
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(4096))
    assert run([MODELGATE, "push", src, "--model", name], env).stdout.strip().startswith(name)
    ModelVersion.objects.filter(model__name=name).update(state="ready")
    shown = json.loads(run([MODELGATE, "show", f"{name}/1", "--json"], env).stdout)
    assert (shown["model"], shown["version"]) == (name, 1)
    run([MODELGATE, "alias", "set", name, "champion", "1"], env)
    run([MODELGATE, "pull", f"{name}@champion", tmp_path / "out"], env)
    assert files_of(tmp_path / "out") == files_of(src)
    listed = run([MODELGATE, "models", "ls"], env).stdout
    assert name in listed


# --- the Git mirror ---------------------------------------------------------------------


def test_names_of_the_old_form_encode_to_themselves():
    rng = random.Random(20)
    old = ["fraud", "fraud-eu", "churn.v2", "x_y", "0", "a..b", "a" * 128]
    old += [
        rng.choice("az09") + "".join(rng.choice("az09._-") for _ in range(rng.randint(0, 20)))
        for _ in range(2000)
    ]
    for name in old:
        assert gitnames.encode(name) == name == gitnames.decode(name)
        assert gitnames.folder(name) == name


def test_no_two_names_encode_alike():
    rng = random.Random(7)
    alphabet = "aZ09_-. %#?@XUVé模😀"
    seen: dict[str, str] = {}
    names = ["fraud detector", "fraud-X20detector", "fraud-x20detector", "Fraud-X20Detector"]
    names += [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))) for _ in range(50_000)
    ]
    for name in names:
        encoded = gitnames.encode(name)
        assert gitnames.decode(encoded) == name, (name, encoded)
        assert seen.setdefault(encoded, name) == name, (name, seen[encoded], encoded)
        assert not encoded.startswith("-")
        if not gitnames.OLD_FORM.fullmatch(name):
            assert all(c.isascii() and (c.isalnum() or c in "_-") for c in encoded), encoded
    assert gitnames.encode("fraud detector") == "fraud-X20detector"
    assert gitnames.encode("fraud-X20detector") == "fraud-X2DX20detector"


@pytest.mark.django_db
def test_the_git_mirror_writes_encoded_names_that_gto_reads_back(
    alice, admin_user, settings, tmp_path
):
    settings.MODELGATE_GIT_DIR = git_dir = tmp_path / "git"
    names = [
        "Fraud Detector",
        "fraud-x20detector",  # what "fraud detector" would look like with a lowercase escape
        "UpdateRMTest 2",
        "modèle de fraude",
        "fraud",
        "Ölmodell",
        "L" * 250,  # too long for a ref: no tags, a shortened folder
    ]
    for name in names:
        model = RegisteredModel.objects.create(name=name, created_by=alice, team=default_team())
        version = _ready_version(model, alice, 1)
    production = Environment.objects.create(name="production")
    detector = ModelVersion.objects.get(model__name="Fraud Detector")
    Promotion.objects.create(
        model=detector.model, version=detector, environment=production,
        state="promoted", sequence=1,
    )  # fmt: skip
    del version
    gitmirror.sync()

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(git_dir), *args], capture_output=True, text=True, check=True
        ).stdout

    tags = set(git("tag").split())
    assert {
        "Fraud-X20Detector@v1.0.0",
        "Fraud-X20Detector#production#1",
        "fraud-x20detector@v1.0.0",
        "UpdateRMTest-X202@v1.0.0",
        "mod-XE8le-X20de-X20fraude@v1.0.0",
        "fraud@v1.0.0",
        "_XD6lmodell@v1.0.0",
    } == tags
    files = git("ls-files", "models/").split()
    assert "models/Fraud-X20Detector/1.yaml" in files and len(files) == len(names)
    long_folder = gitnames.folder("L" * 250)
    assert f"models/{long_folder}/1.yaml" in files and len(long_folder) <= gitnames.MAX_FOLDER
    document = (git_dir / "models" / "Fraud-X20Detector" / "1.yaml").read_text()
    assert "model: Fraud Detector" in document
    assert "Register Fraud Detector version 1" in git("log", "--format=%s")

    shown = subprocess.run(
        [str(Path(sys.executable).parent / "gto"), "show", "-r", str(git_dir), "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    registry = json.loads(shown.stdout)
    read_back = {gitnames.decode(artifact) for artifact in registry}
    # GTO names start with an ASCII letter or digit: "Ölmodell"'s tags are Git's alone.
    assert read_back == set(names) - {"Ölmodell", "L" * 250}
    assert registry["Fraud-X20Detector"]["stage"]["production"] == "v1.0.0"

    # Deleting a model commits the removal of its (encoded) folder, under its name.
    from registry.services.registered_models import delete_model

    delete_model(RegisteredModel.objects.get(name="Fraud Detector"), admin_user)
    assert gitmirror.sync()["removed"] == 1
    assert git("log", "-1", "--format=%s") == "Remove Fraud Detector\n"
    assert "Fraud-X20Detector@v1.0.0" in git("tag").split()


def test_cli_references_split_where_a_name_cannot_hold_the_separator():
    from registry.client import split_ref

    assert split_ref("a@b@prod") == ("a@b", "@prod")  # aliases hold no '@'
    assert split_ref("a@b/3") == ("a@b", "3")  # names hold no '/'
    assert split_ref("Fraud Detector") == ("Fraud Detector", "latest")
    assert split_ref("fraud@champion") == ("fraud", "@champion")
