"""The Docker Compose deployment, run as plain processes (this machine has no container engine).

`docker-compose config` (Docker's own parser) validates docker-compose.yml and resolves it.
Every Modelgate service is then started with the command and environment the file gives
it — the two web replicas with the image's CMD from the Dockerfile — with only addresses
changed to this machine's: Postgres → the test database, Redis → a redis-server of the
test's own, MinIO → a moto S3 server, /data and the key secret → a temporary directory.
The proxy is a real nginx running deploy/nginx.conf with its `web` upstream pointed at
both replicas. A model goes up through the proxy in chunks, becomes ready, is promoted
and comes back byte-identical; the proxy's log shows both replicas took chunks. The
Kubernetes manifests' probe paths and the compose health check are tried on a replica.
(tests/test_deploy.py checks the same files' shape offline.)
"""

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from registry.models import Environment

from .api_flows import promote_and_wait
from .conftest import token_for
from .processes import BIN, ROOT, Process, Redis, database_url, free_port, wait_until
from .storage_support import new_key

pytest_plugins = ["tests.storage_fixtures"]  # moto, s3_env, bucket fixtures

MIB = 1024 * 1024
CHUNK = 4 * MIB
SIZE = 6 * CHUNK + 4321
DOTENV = {
    "SECRET_KEY": "compose-test-secret-key-0123456789abcdef",
    "POSTGRES_PASSWORD": "unused-here",
    "MINIO_ROOT_USER": "modelgate",
    "MINIO_ROOT_PASSWORD": "unused-here-too",
}
TOOLS = {"docker-compose": "docker-compose", "nginx": "nginx"}
missing = [name for name, tool in TOOLS.items() if not shutil.which(tool)]
if missing and os.environ.get("CI", "").lower() == "true":
    raise RuntimeError(
        f"CI needs {', '.join(missing)} for tests/test_compose.py (make test installs them as root)"
    )
pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        bool(missing),
        reason=f"{', '.join(missing)} not installed (apt-get install docker-compose nginx-light)",
    ),
]


def resolved_compose() -> dict:
    """docker-compose.yml as Docker's own tool reads it, with the .env the README asks for."""
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
        env={**os.environ, **DOTENV},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def image_cmd() -> list[str]:
    """The Dockerfile's CMD: what a container of the image runs when a service names none."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found = re.search(r"^CMD\s+(\[.*\])\s*$", text, re.MULTILINE)
    assert found, "the Dockerfile has no CMD in exec form"
    return json.loads(found.group(1))


def local_argv(argv: list[str], port: int | None = None) -> list[str]:
    """The container's command with this venv's programs and, for web, a local port."""
    programs = {
        "gunicorn": str(BIN / "gunicorn"),
        "celery": str(BIN / "celery"),
        "python": sys.executable,
    }
    argv = [programs.get(argv[0], argv[0]), *argv[1:]]
    if port is not None:
        argv = [f"127.0.0.1:{port}" if arg == "0.0.0.0:8000" else arg for arg in argv]
    return argv


def local_env(
    service: dict, data: Path, redis_url: str, moto_env: dict, bucket: str, key_file: Path
):
    """The service's environment with every address and path moved to this machine."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    for name, value in service["environment"].items():
        value = str(value)
        if value.startswith("/tmp/"):  # each container has a /tmp of its own
            value = f"{data}{value}"
        value = value.replace("redis://redis:6379", redis_url.rsplit("/", 1)[0])
        value = value.replace("/run/secrets/master_key", str(key_file))
        value = value.replace("/data", str(data))
        env[name] = value
    env["DATABASE_URL"] = database_url()
    env["MODELGATE_STORAGE_URL"] = env["MODELGATE_STORAGE_URL"].replace(
        "s3://modelgate/", f"s3://{bucket}/"
    )
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env[name] = moto_env[name]
    # The image's own ENV and install: the code and its state directory.
    env.update(MODELGATE_VAR_DIR=str(data), PYTHONPATH=str(ROOT))
    return env


def nginx_config(tmp: Path, listen: int, web_ports: list[int]) -> Path:
    """deploy/nginx.conf as the proxy service mounts it, inside a minimal main config."""
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    upstream = re.search(r"^\s*server web:8000(.*);$", site, re.MULTILINE)
    assert upstream, "deploy/nginx.conf no longer proxies to web:8000"
    servers = "\n".join(f"    server 127.0.0.1:{port}{upstream.group(1)};" for port in web_ports)
    site = site.replace(upstream.group(0), servers)
    assert "listen 80;" in site
    site = site.replace("listen 80;", f"listen 127.0.0.1:{listen};")
    (tmp / "site.conf").write_text(site)
    temp = tmp / "nginx-temp"
    temp.mkdir()
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers may then use tmp's files
    main = f"""{user}worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{}}
http {{
    log_format upstreams '$request_method $uri $status $upstream_addr';
    access_log {tmp}/nginx-access.log upstreams;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {tmp}/site.conf;
}}
"""
    (tmp / "nginx.conf").write_text(main)
    return tmp / "nginx.conf"


def chunk(index: int) -> bytes:
    return random.Random(index).randbytes(min(CHUNK, SIZE - index * CHUNK))


@pytest.fixture
def deployment(tmp_path, settings, moto, s3_env, bucket, transactional_db):
    """The compose services of Modelgate, plus nginx, as local processes; stopped at the end."""
    compose = resolved_compose()
    services = compose["services"]
    key_file = tmp_path / "master.key"
    key_file.write_text(new_key())
    settings.MODELGATE_STORAGE_URL = f"s3://{bucket}/store"
    settings.MODELGATE_ENCRYPTION_KEY = key_file.read_text().strip()
    started: list[Process] = []
    try:
        redis = Redis(tmp_path).start()
        started.append(redis)

        def run(name: str, argv: list[str], home: str, port: int | None = None) -> Process:
            data = tmp_path / home
            data.mkdir(exist_ok=True)
            env = local_env(services[name], data, redis.url, s3_env, bucket, key_file)
            return Process(
                local_argv(argv, port), env, tmp_path / f"{home}.log"
            )  # cwd: the code, as WORKDIR /app

        migrate = run("migrate", services["migrate"]["command"], "migrate")
        migrate.start().proc.wait(timeout=120)
        assert migrate.proc.returncode == 0, migrate.output()

        webs = []
        for replica in range(services["web"]["deploy"]["replicas"]):
            port = free_port()
            web = run("web", services["web"].get("command") or image_cmd(), f"web-{replica}", port)
            web.port, web.url = port, f"http://127.0.0.1:{port}"
            started.append(web.start())
            webs.append(web)
        for name in ("worker", "worker-processing", "beat"):
            started.append(run(name, services[name]["command"], name).start())
        for web in webs:
            wait_until(lambda w=web: _answers(f"{w.url}/healthz"), 60, "a web replica", web)

        proxy_port = free_port()
        conf = nginx_config(tmp_path, proxy_port, [w.port for w in webs])
        nginx = Process(
            ["nginx", "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"],
            dict(os.environ),
            tmp_path / "nginx.log",
        )
        started.append(nginx.start())
        proxy = f"http://127.0.0.1:{proxy_port}"
        wait_until(lambda: _answers(f"{proxy}/healthz"), 30, "nginx", nginx)
        yield {
            "proxy": proxy,
            "webs": webs,
            "tmp": tmp_path,
            "compose": compose,
            "started": started,
        }
    finally:
        for process in reversed(started):
            process.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_compose_services_serve_a_model_through_the_proxy(deployment, alice, bob):
    proxy, webs, tmp = deployment["proxy"], deployment["webs"], deployment["tmp"]
    assert len(webs) >= 2, "compose should run several web replicas"
    Environment.objects.create(
        name="production", required_approvals=1, reviewer_group="reviewers", gates=[]
    )
    auth = {"Authorization": f"Bearer {token_for(alice)}"}
    count = -(-SIZE // CHUNK)
    sha256 = hashlib.sha256(b"".join(chunk(i) for i in range(count))).hexdigest()

    with httpx.Client(base_url=proxy, headers=auth, timeout=120) as client:
        assert client.post("/api/v1/models/", json={"name": "composed"}).status_code == 201
        declared = client.post(
            "/api/v1/models/composed/versions/",
            json={"files": [{"path": "model.bin", "size": SIZE, "sha256": sha256}]},
        )
        assert declared.status_code == 201, declared.text
        url = "/api/v1/models/composed/versions/1/files/model.bin"
        for index in range(count):
            data, start = chunk(index), index * CHUNK
            response = client.put(
                url,
                content=data,
                headers={
                    "Content-Range": f"bytes {start}-{start + len(data) - 1}/{SIZE}",
                    "Content-Type": "application/octet-stream",
                },
            )
            assert response.status_code == 200, (index, response.text)
        finalized = client.post("/api/v1/models/composed/versions/1/finalize/")
        assert finalized.status_code == 200, finalized.text

        def processed():
            body = client.get("/api/v1/models/composed/versions/1/").json()
            return body if body["state"] in ("ready", "failed") else None

        version = wait_until(processed, 180, "the processing worker")
        assert version["state"] == "ready", version
        assert version["scan"]["status"] == "clean" and version["package"]["state"] == "ready"

        reviewer = {"Authorization": f"Bearer {token_for(bob)}"}
        state = promote_and_wait(client, "", "composed/1", "production", auth, reviewer)
        assert state == "promoted"  # the short-jobs worker ran the promotion
        download = client.get("/api/v1/models/composed/versions/@production/files/model.bin")
        assert download.status_code == 200
        assert hashlib.sha256(download.content).hexdigest() == sha256

    # nginx spread the chunks over both replicas (round robin), and each took its share
    puts = [
        line.split()[-1]
        for line in (tmp / "nginx-access.log").read_text().splitlines()
        if line.startswith("PUT ")
    ]
    assert len(puts) == count and {f"127.0.0.1:{w.port}" for w in webs} <= set(puts), puts


def test_health_checks_of_compose_and_kubernetes_pass_on_a_running_replica(deployment):
    web = deployment["webs"][0]
    # compose's own health check command, aimed at the replica's port
    check = deployment["compose"]["services"]["web"]["healthcheck"]["test"]
    assert check[0] == "CMD"
    argv = [arg.replace("127.0.0.1:8000", f"127.0.0.1:{web.port}") for arg in check[1:]]
    assert subprocess.run(local_argv(argv), timeout=30).returncode == 0

    manifests = [
        doc
        for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    deployments = {d["metadata"]["name"]: d for d in manifests if d["kind"] == "Deployment"}
    (container,) = deployments["modelgate-web"]["spec"]["template"]["spec"]["containers"]
    for probe in ("readinessProbe", "livenessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert httpx.get(f"{web.url}{path}", timeout=5).status_code == 200, (probe, path)
