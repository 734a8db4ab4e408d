"""The `modelgate` CLI and the Python client against a live server (and a live worker)."""

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from registry.client import Client, ClientError

from .conftest import ROOT, token_for

MODELGATE = ROOT / ".venv" / "bin" / "modelgate"
MiB = 1024 * 1024

pytestmark = pytest.mark.live


@pytest.fixture
def server(transactional_db, live_server) -> str:
    return live_server.url


@pytest.fixture
def alice_token(alice) -> str:
    return token_for(alice)


@pytest.fixture
def config_dir(tmp_path) -> Path:
    return tmp_path / "config"


def cli_env(config_dir: Path, **extra: str) -> dict[str, str]:
    """The test's environment without any MODELGATE_* of the developer's, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELGATE_")}
    return {**env, "MODELGATE_CONFIG_DIR": str(config_dir), **extra}


def run(args: list, env: dict[str, str], expect: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(a) for a in args], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert result.returncode == expect, (
        f"{args} exited {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    )
    return result


@pytest.fixture
def modelgate(server, alice_token, config_dir):
    """Run the installed `modelgate` script as alice against the live server."""

    def modelgate_(*args, expect: int = 0, **env: str) -> subprocess.CompletedProcess:
        base = {"MODELGATE_URL": server, "MODELGATE_TOKEN": alice_token}
        return run([MODELGATE, *args], cli_env(config_dir, **{**base, **env}), expect)

    return modelgate_


def files_of(folder: Path) -> dict[str, bytes]:
    """Every regular file under `folder` by relative POSIX path (symlinks left out)."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def make_model_folder(root: Path) -> Path:
    src = root / "src"
    (src / "nested" / "deeper").mkdir(parents=True)
    (src / "model.bin").write_bytes(os.urandom(3 * MiB + 12345))
    (src / "config.json").write_text(json.dumps({"layers": [64, 32], "dropout": 0.1}))
    (src / "empty.txt").write_bytes(b"")
    (src / "nested" / "README.md").write_text("# fraud model\n")
    (src / "nested" / "deeper" / "weights.npy").write_bytes(os.urandom(70_001))
    (src / "link-to-model.bin").symlink_to(src / "model.bin")
    return src


def test_push_then_pull_round_trips_a_folder_byte_identical(modelgate, celery_worker, tmp_path):
    src = make_model_folder(tmp_path)
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"accuracy": 0.93, "auc": 0.97}))
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"optimizer": "adam", "lr": 0.001}))
    modelgate("models", "create", "fraud", "--description", "Fraud scores")

    pushed = modelgate(
        "push",
        src,
        "--model",
        "fraud",
        "--metrics",
        metrics,
        "--params",
        params,
        "--tag",
        "team=risk",
        "--description",
        "first cut",
        "--chunk-size",
        str(MiB),
        "--wait",
    )
    assert pushed.stdout.strip() == "fraud/1"

    out = tmp_path / "out"
    modelgate("pull", "fraud/1", out)
    expected = files_of(src)
    assert "link-to-model.bin" not in expected
    assert sorted(files_of(out)) == sorted(expected)
    assert files_of(out) == expected
    assert not any(p.is_symlink() for p in out.rglob("*"))
    (tmp_path / "plain").write_bytes(b"")  # pulled files get the usual mode, not 0600
    assert (out / "model.bin").stat().st_mode == (tmp_path / "plain").stat().st_mode

    shown = json.loads(modelgate("show", "fraud/1", "--json").stdout)
    assert shown["state"] == "ready"
    assert shown["metrics"] == {"accuracy": 0.93, "auc": 0.97}
    assert shown["params"] == {"optimizer": "adam", "lr": "0.001"}
    assert shown["tags"] == {"team": "risk"}
    assert {f["path"]: f["size"] for f in shown["files"]} == {
        path: len(data) for path, data in expected.items()
    }


def test_cli_process_never_imports_django(modelgate, server, alice_token, config_dir):
    modelgate("models", "create", "fraud")
    script = (
        "import sys\n"
        "from registry.client.cli import main\n"
        "main(['models', 'ls', '--json'], standalone_mode=False)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'django')\n"
        "assert not loaded, loaded\n"
        "print('no django')\n"
    )
    env = cli_env(config_dir, MODELGATE_URL=server, MODELGATE_TOKEN=alice_token)
    result = run([sys.executable, "-c", script], env)
    assert '"name": "fraud"' in result.stdout
    assert result.stdout.rstrip().endswith("no django")


def test_login_saves_a_token_that_later_commands_use(server, alice, config_dir):
    env = cli_env(config_dir)  # neither MODELGATE_URL nor MODELGATE_TOKEN
    run(
        [
            MODELGATE,
            "login",
            "--url",
            server,
            "--username",
            "alice",
            "--password",
            "alice-password-1",
        ],
        env,
    )

    config = config_dir / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    saved = json.loads(config.read_text())
    assert saved["url"] == server.rstrip("/")
    assert saved["token"].startswith("mgt_")

    assert run([MODELGATE, "models", "ls"], env).stdout.split() == [
        "NAME",
        "LATEST",
        "ALIASES",
        "DESCRIPTION",
    ]
    run([MODELGATE, "models", "create", "fraud"], env)
    listed = json.loads(run([MODELGATE, "models", "ls", "--json"], env).stdout)
    assert [m["name"] for m in listed] == ["fraud"]


def test_login_with_a_wrong_password_saves_nothing(server, alice, config_dir):
    result = run(
        [
            MODELGATE,
            "login",
            "--url",
            server,
            "--username",
            "alice",
            "--password",
            "not-her-password",
        ],
        cli_env(config_dir),
        expect=1,
    )
    assert "Wrong username or password." in result.stderr
    assert "Traceback" not in result.stderr
    assert not (config_dir / "config.json").exists()


def test_alias_set_and_show_by_alias(modelgate, celery_worker, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.pkl").write_bytes(os.urandom(2048))
    modelgate("models", "create", "fraud")
    assert modelgate("push", src, "--model", "fraud", "--wait").stdout.strip() == "fraud/1"

    moved = modelgate("alias", "set", "fraud", "champion", "1")
    assert moved.stdout.strip() == "fraud@champion -> 1"

    shown = json.loads(modelgate("show", "fraud@champion", "--json").stdout)
    assert shown["version"] == 1
    assert shown["aliases"] == ["champion"]
    assert "fraud/1  ready" in modelgate("show", "fraud@champion").stdout
    modelgate("pull", "fraud@champion", tmp_path / "out")
    assert files_of(tmp_path / "out") == files_of(src)


def test_alias_set_on_an_unfinished_version_fails_with_the_servers_message(
    modelgate, server, alice_token
):
    with Client(server, alice_token) as client:
        client.create_model("fraud")
        client.create_version("fraud", [{"path": "m.bin", "size": 1, "sha256": "0" * 64}])

    result = modelgate("alias", "set", "fraud", "champion", "1", expect=1)
    assert result.stderr.startswith("Error: Version 1 is uploading")
    assert "Traceback" not in result.stderr


def test_pull_refuses_a_bad_token_with_a_clear_message(modelgate, server, tmp_path):
    bad = "mgt_000000000000_not-a-real-secret"
    answer = httpx.get(
        f"{server}/api/v1/models/fraud/versions/1/", headers={"Authorization": f"Bearer {bad}"}
    )
    assert answer.status_code == 401
    message = answer.json()["error"]["message"]

    out = tmp_path / "out"
    result = modelgate("pull", "fraud/1", out, MODELGATE_TOKEN=bad, expect=1)
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not out.exists()


def test_usage_errors_exit_with_code_2(modelgate, tmp_path):
    assert modelgate("pull", "fraud/latest", tmp_path / "out", expect=2).returncode == 2
    assert modelgate("push", tmp_path, expect=2).returncode == 2  # --model is missing


class BreakingTransport(httpx.BaseTransport):
    """Breaks chosen PUTs: `lose` delivers one but loses the answer, `503` never delivers."""

    def __init__(self, plan: dict[int, str]):
        self.inner = httpx.HTTPTransport()
        self.plan = plan
        self.puts = 0
        self.delivered: list[tuple[str, str | None]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        action = None
        if request.method == "PUT":
            self.puts += 1
            action = self.plan.get(self.puts)
        if action == "503":
            request.read()
            return httpx.Response(
                503,
                request=request,
                json={"error": {"code": "unavailable", "message": "Try again.", "details": {}}},
            )
        self.delivered.append((request.method, request.headers.get("Content-Range")))
        response = self.inner.handle_request(request)
        if action == "lose":
            response.read()
            response.close()
            raise httpx.ReadError("connection reset by peer", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def test_push_resumes_after_a_broken_chunk(server, alice_token, tmp_path):
    data = os.urandom(3 * MiB + 1000)
    digest = hashlib.sha256(data).hexdigest()
    local = tmp_path / "model.bin"
    local.write_bytes(data)
    path = "weights/model.bin"
    with Client(server, alice_token) as client:
        client.create_model("fraud")
        number = client.create_version(
            "fraud", [{"path": path, "size": len(data), "sha256": digest}]
        )["version"]

    # An earlier attempt got the first chunk in before it died.
    first = httpx.put(
        f"{server}/api/v1/models/fraud/versions/{number}/files/{path}",
        content=data[:MiB],
        headers={
            "Authorization": f"Bearer {alice_token}",
            "Content-Type": "application/octet-stream",
            "Content-Range": f"bytes 0-{MiB - 1}/{len(data)}",
        },
    )
    assert first.status_code == 200, first.text
    assert first.json()["received"] == MiB
    assert first.headers["Upload-Offset"] == str(MiB)

    transport = BreakingTransport({1: "lose", 2: "503"})
    progress: list[int] = []
    with Client(server, alice_token, transport=transport, retry_backoff=0) as client:
        status = client.upload_file(
            "fraud", number, path, local, chunk_size=MiB, progress=progress.append
        )
        assert status["complete"] is True
        assert status["sha256"] == digest
        assert client.finalize("fraud", number)["state"] == "processing"

    puts = [rng for method, rng in transport.delivered if method == "PUT"]
    total = len(data)
    # Each chunk reached the server once: nothing re-sent, the lost answer learned by HEAD.
    assert puts == [
        f"bytes {MiB}-{2 * MiB - 1}/{total}",
        f"bytes {2 * MiB}-{3 * MiB - 1}/{total}",
        f"bytes {3 * MiB}-{total - 1}/{total}",
    ]
    assert [m for m, _ in transport.delivered].count("HEAD") == 3  # at start, after each break
    assert sum(progress) == total

    download = httpx.get(
        f"{server}/api/v1/models/fraud/versions/{number}/files/{path}",
        headers={"Authorization": f"Bearer {alice_token}"},
    )
    assert download.content == data
    assert download.headers["ETag"] == f'"{digest}"'


def test_upload_of_other_bytes_than_declared_fails_with_checksum_mismatch(
    server, alice_token, tmp_path
):
    local = tmp_path / "model.bin"
    local.write_bytes(b"changed after hashing")
    declared = hashlib.sha256(b"what was hashed first").hexdigest()
    with Client(server, alice_token) as client:
        client.create_model("fraud")
        size = local.stat().st_size
        number = client.create_version(
            "fraud", [{"path": "model.bin", "size": size, "sha256": declared}]
        )["version"]
        with pytest.raises(ClientError) as caught:
            client.upload_file("fraud", number, "model.bin", local, chunk_size=8)
        assert caught.value.code == "checksum_mismatch"
        assert caught.value.status == 400
        status = client.upload_status("fraud", number, "model.bin")
        assert (status["received"], status["complete"]) == (0, False)


@pytest.mark.parametrize(
    "evil", ["../escaped.txt", "/tmp/abs.txt", "a//b", "a\\..\\b", "ok/../../x", "nul\x00.txt"]
)
def test_pull_refuses_server_paths_that_would_leave_the_folder(tmp_path, evil):
    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/versions/1/"):
            return httpx.Response(
                200,
                json={
                    "model": "fraud",
                    "version": 1,
                    "files": [
                        {
                            "path": "fine.txt",
                            "size": 2,
                            "sha256": hashlib.sha256(b"ok").hexdigest(),
                            "complete": True,
                        },
                        {
                            "path": evil,
                            "size": 2,
                            "sha256": hashlib.sha256(b"ok").hexdigest(),
                            "complete": True,
                        },
                    ],
                },
            )
        return httpx.Response(200, content=b"ok")

    out = tmp_path / "deep" / "out"
    mock = httpx.MockTransport(server)
    with (
        Client("http://modelgate.test", "t", transport=mock) as client,
        pytest.raises(ClientError, match="Refusing"),
    ):
        client.pull("fraud", 1, out)
    assert not (tmp_path / "deep").exists()
    assert not (tmp_path / "escaped.txt").exists()


def test_pull_keeps_nothing_when_the_bytes_do_not_match(tmp_path):
    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/versions/1/"):
            return httpx.Response(
                200,
                json={
                    "model": "fraud",
                    "version": 1,
                    "files": [
                        {
                            "path": "m.bin",
                            "size": 2,
                            "sha256": hashlib.sha256(b"ok").hexdigest(),
                            "complete": True,
                        }
                    ],
                },
            )
        return httpx.Response(200, content=b"no")

    mock = httpx.MockTransport(server)
    with (
        Client("http://modelgate.test", "t", transport=mock) as client,
        pytest.raises(ClientError, match="sha256"),
    ):
        client.pull("fraud", 1, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_lists_follow_next_links_but_send_the_token_only_to_the_configured_server():
    seen = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers.get("Authorization")))
        if "cursor" not in request.url.params:
            # Built from a Host header the proxy rewrote: must not receive the token.
            nxt = "http://internal.example:8000/api/v1/models/?cursor=abc"
            return httpx.Response(200, json={"results": [{"name": "a"}], "next": nxt})
        return httpx.Response(200, json={"results": [{"name": "b"}], "next": None})

    mock = httpx.MockTransport(server)
    with Client("https://modelgate.test", "secret", transport=mock) as client:
        assert [m["name"] for m in client.list_models()] == ["a", "b"]
    assert seen == [("modelgate.test", "Bearer secret")] * 2


def test_the_client_retries_reads_on_503_and_never_repeats_a_write():
    """A server whose database is restarting answers 503 with Retry-After: reads wait and
    try again, a create is not sent twice (it may have happened)."""
    seen = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if len([m for m in seen if m == request.method]) <= 2:
            return httpx.Response(
                503,
                headers={"Retry-After": "5"},
                json={"error": {"code": "unavailable", "message": "database restarting"}},
            )
        return httpx.Response(200, json={"name": "fraud", "aliases": {}})

    mock = httpx.MockTransport(server)
    with Client("http://modelgate.test", "t", transport=mock, retry_backoff=0) as client:
        assert client.get_model("fraud")["name"] == "fraud"
        assert seen == ["GET", "GET", "GET"]
        with pytest.raises(ClientError, match="database restarting"):
            client.create_model("fraud")
    assert seen.count("POST") == 1
