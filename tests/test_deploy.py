"""The deployment files parse and agree with the code they deploy.

No Docker engine or cluster runs here, so this checks what can be checked offline: every
manifest is valid YAML of the expected shape, probes hit URLs Django serves, every
environment variable is one the settings (or boto3) read, beat runs once, and no secret
value is written into a file.
"""

import re
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath

import pytest
import yaml
from django.urls import resolve

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
SETTINGS = (ROOT / "config" / "settings.py").read_text()
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# Read by libraries rather than by name in settings.py: boto3, dj-database-url,
# prometheus_client, and Python, git and gunicorn themselves.
LIBRARY_ENV = {
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "DATABASE_URL",
    "PROMETHEUS_MULTIPROC_DIR",
    "PYTHONDONTWRITEBYTECODE",
    "HOME",
}
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|TOKEN|_KEY$|^DATABASE_URL$)")


def known_setting(name: str) -> bool:
    if name in LIBRARY_ENV or f'"{name}"' in SETTINGS:
        return True
    # Keys may come from a file: _key_text("X") reads X and X_FILE.
    return name.endswith("_FILE") and f'_key_text("{name.removesuffix("_FILE")}")' in SETTINGS


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def manifests() -> list[dict]:
    documents = []
    for path in sorted(K8S.glob("*.yaml")):
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def of_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in manifests() if d["kind"] == kind}


def pod_spec(workload: dict) -> dict:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def test_compose_scales_web_and_workers_behind_a_proxy_on_s3():
    services = compose()["services"]
    assert {"postgres", "redis", "minio", "minio-bucket", "proxy", "web", "beat"} <= set(services)
    assert services["web"]["deploy"]["replicas"] >= 2 and "ports" not in services["web"]
    assert services["worker-processing"]["deploy"]["replicas"] >= 2
    assert services["beat"]["deploy"]["replicas"] == 1
    assert services["proxy"]["ports"] == ["8000:80"]
    conf_mount = services["proxy"]["volumes"][0].split(":")[0]
    conf = (ROOT / conf_mount).read_text()
    assert "server web:8000" in conf and "client_max_body_size 0;" in conf
    assert "proxy_request_buffering off;" in conf  # uploads stream through

    env = services["web"]["environment"]
    assert env["MODELGATE_STORAGE_URL"].startswith("s3://")
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    # The master key is a secret file, never an environment value.
    assert "MODELGATE_ENCRYPTION_KEY" not in env
    assert env["MODELGATE_ENCRYPTION_KEY_FILE"] == "/run/secrets/master_key"
    assert services["web"]["secrets"] == ["master_key"]
    assert compose()["secrets"]["master_key"] == {"file": "./secrets/master.key"}


def test_compose_environment_names_are_real_settings():
    services = compose()["services"]
    for name in ("web", "worker", "worker-processing", "beat", "migrate"):
        for variable, value in services[name]["environment"].items():
            assert known_setting(variable), f"{name}: {variable} is read by nothing"
            if SECRET_NAME.search(variable):  # only ever interpolated from .env
                assert str(value).startswith("${") or "${" in str(value), variable


def test_every_manifest_parses_and_kustomization_lists_them():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    kinds = {d["kind"] for d in manifests()}
    expected = {"Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget", "Job"}
    assert expected <= kinds
    if shutil.which("kubectl"):
        result = subprocess.run(
            ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        built = [d for d in yaml.safe_load_all(result.stdout) if d]
        assert all(
            d["metadata"].get("namespace") == "modelgate" for d in built if d["kind"] != "Namespace"
        )


def test_web_probes_hit_urls_django_serves():
    web = of_kind("Deployment")["modelgate-web"]
    container = pod_spec(web)["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] in ports
        assert resolve(get["path"]).url_name == get["path"].strip("/")
    assert f"0.0.0.0:{ports['http']}" in container["command"]
    service = of_kind("Service")["modelgate-web"]
    assert service["spec"]["selector"] == web["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_beat_is_a_single_replica_and_budgets_cover_the_rest():
    deployments = of_kind("Deployment")
    beat = deployments["modelgate-beat"]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"
    assert "beat" in pod_spec(beat)["containers"][0]["command"]
    for name, workload in deployments.items():
        if name != "modelgate-beat":
            assert "beat" not in pod_spec(workload)["containers"][0]["command"], name
    budgets = of_kind("PodDisruptionBudget")
    covered = [b["spec"]["selector"]["matchLabels"] for b in budgets.values()]
    for name, workload in deployments.items():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        has_budget = any(selector.items() <= labels.items() for selector in covered)
        assert has_budget == (name != "modelgate-beat"), name
    web_budget = budgets["modelgate-web"]["spec"]["minAvailable"]
    assert web_budget < deployments["modelgate-web"]["spec"]["replicas"]  # drains can proceed


def test_no_plaintext_secrets_and_only_real_settings():
    configmap = of_kind("ConfigMap")["modelgate"]["data"]
    for name in configmap:
        assert known_setting(name), f"ConfigMap: {name} is read by nothing"
        assert name.endswith("_FILE") or not SECRET_NAME.search(name), (
            f"secret in ConfigMap: {name}"
        )
    for secret in of_kind("Secret").values():
        for name, value in {**secret.get("stringData", {}), **secret.get("data", {})}.items():
            assert value == "", f"Secret {secret['metadata']['name']} holds a value for {name}"
            assert name == "master.key" or known_setting(name), name
    key_file = configmap["MODELGATE_ENCRYPTION_KEY_FILE"]
    workloads = {**of_kind("Deployment"), **of_kind("Job"), **of_kind("CronJob")}
    assert {"modelgate-web", "modelgate-worker", "modelgate-beat", "modelgate-migrate"} <= set(
        workloads
    )
    for name, workload in workloads.items():
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            for variable in container.get("env", []):
                assert "value" not in variable or not SECRET_NAME.search(variable["name"])
            refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
            assert refs == {"modelgate"}, name  # the ConfigMap and the Secret of that name
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            mount = mounts[str(Path(key_file).parent)]
            assert mount["readOnly"] is True
            assert volumes[mount["name"]]["secret"]["secretName"] == "modelgate-master-key"


@pytest.mark.parametrize("path", ["Dockerfile", "deploy/nginx.conf"])
def test_referenced_files_exist(path):
    assert (ROOT / path).is_file()


# --- pods that survive: confined, read-only, versioned, sharing nothing on disk ---------


def workloads() -> dict[str, dict]:
    return {**of_kind("Deployment"), **of_kind("Job"), **of_kind("CronJob")}


def containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def environment(container: dict) -> dict[str, str]:
    """What the container's processes see: envFrom in order, then env (later ones win)."""
    sources = {"configMapRef": of_kind("ConfigMap"), "secretRef": of_kind("Secret")}
    env: dict[str, str] = {}
    for ref in container.get("envFrom", []):
        ((kind, target),) = ref.items()
        document = sources[kind][target["name"]]
        env.update({**document.get("data", {}), **document.get("stringData", {})})
    env.update({v["name"]: v["value"] for v in container.get("env", []) if "value" in v})
    return env


def mount_of(path: str, container: dict) -> dict | None:
    """The volume mount a path is on (the deepest one), or None: the root filesystem."""
    on = [
        m
        for m in container.get("volumeMounts", [])
        if PurePosixPath(path).is_relative_to(m["mountPath"])
    ]
    return max(on, key=lambda m: len(m["mountPath"]), default=None)


def written_paths(container: dict, env: dict[str, str]) -> set[str]:
    """Everything the container's processes write to (besides /dev/shm)."""
    paths = {"/tmp", env["MODELGATE_VAR_DIR"], env["MODELGATE_GIT_DIR"], env["HOME"]}
    if "PROMETHEUS_MULTIPROC_DIR" in env:
        paths.add(env["PROMETHEUS_MULTIPROC_DIR"])
    command = container["command"]
    for flag in ("--schedule", "--logfile", "--pidfile", "--statedb"):  # celery's own files
        if flag in command:
            paths.add(str(PurePosixPath(command[command.index(flag) + 1]).parent))
    return paths


def test_every_pod_runs_confined_on_a_read_only_root():
    for name, workload in workloads().items():
        spec = pod_spec(workload)
        pod = spec["securityContext"]
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0, name
        for container in containers(spec):
            context = container.get("securityContext", {})
            where = f"{name}/{container['name']}"
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where


def test_every_path_a_process_writes_is_a_volume_of_its_pod():
    for name, workload in workloads().items():
        spec = pod_spec(workload)
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in containers(spec):
            where = f"{name}/{container['name']}"
            env = environment(container)
            assert env["PYTHONDONTWRITEBYTECODE"] == "1", where
            for path in sorted(written_paths(container, env)):
                mount = mount_of(path, container)
                assert mount is not None, f"{where} writes {path} on its read-only root"
                assert not mount.get("readOnly"), f"{where}: {path} is mounted read-only"
                assert "emptyDir" in volumes[mount["name"]], f"{where}: {path} is not scratch"
            # The static files are baked into the image; a volume over them would hide them.
            static = env["MODELGATE_STATIC_ROOT"]
            assert mount_of(static, container) is None, f"{where}: a volume hides {static}"
            assert not PurePosixPath(static).is_relative_to(env["MODELGATE_VAR_DIR"]), where


def test_only_gunicorn_sums_metrics_in_a_directory_of_its_own():
    configmap = of_kind("ConfigMap")["modelgate"]["data"]
    assert "PROMETHEUS_MULTIPROC_DIR" not in configmap  # Celery's processes serve no /metrics
    for name, workload in workloads().items():
        spec = pod_spec(workload)
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in containers(spec):
            env = environment(container)
            if container["command"][0] != "gunicorn":
                assert "PROMETHEUS_MULTIPROC_DIR" not in env, name
                continue
            directory = env["PROMETHEUS_MULTIPROC_DIR"]
            mount = mount_of(directory, container)
            assert mount["mountPath"] == directory, name  # emptied per pod, never shared
            assert volumes[mount["name"]]["emptyDir"].get("medium") == "Memory", name


def image_tag(image: str) -> str | None:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def test_images_are_tagged_with_the_project_version():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    retagged = {i["name"]: i for i in kustomization["images"]}
    assert retagged["modelgate"]["newTag"] == VERSION
    for name, workload in workloads().items():
        for container in containers(pod_spec(workload)):
            image = container["image"]
            assert image in retagged or image_tag(image) not in (None, "latest"), (name, image)
    if shutil.which("kubectl"):
        result = subprocess.run(
            ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        built = [d for d in yaml.safe_load_all(result.stdout) if d]
        images = {
            c["image"]
            for d in built
            if d["kind"] in ("Deployment", "Job", "CronJob")
            for c in containers(pod_spec(d))
        }
        assert images == {f"{retagged['modelgate']['newName']}:{VERSION}"}

    document = compose()
    assert document["x-modelgate"]["image"] == f"modelgate:{VERSION}"
    for name, service in document["services"].items():
        assert image_tag(service["image"]) not in (None, "latest"), name
    texts = [*K8S.glob("*.yaml"), ROOT / "docker-compose.yml"]
    texts += (ROOT / "registry" / "packaging" / "templates").glob("*.yaml")
    for path in texts:
        assert ":latest" not in path.read_text(), path


def test_workers_share_nothing_on_disk_and_push_the_git_mirror():
    from urllib.parse import urlsplit

    configmap = of_kind("ConfigMap")["modelgate"]["data"]
    remote = urlsplit(configmap["MODELGATE_GIT_REMOTE"])
    assert remote.scheme in ("https", "ssh") and remote.hostname, remote
    assert remote.password is None  # a token makes the URL a Secret's value
    assert "PersistentVolumeClaim" not in {d["kind"] for d in manifests()}
    workers = 0
    for name, workload in workloads().items():
        spec = pod_spec(workload)
        for volume in spec["volumes"]:
            assert {"emptyDir", "secret", "configMap"} & volume.keys(), (name, volume)
        for container in containers(spec):
            if container["command"][:4] != ["celery", "-A", "workers.celery", "worker"]:
                continue
            workers += 1
            env = environment(container)
            assert env["MODELGATE_GIT_REMOTE"] == configmap["MODELGATE_GIT_REMOTE"], name
            git_dir = mount_of(env["MODELGATE_GIT_DIR"], container)
            volume = next(v for v in spec["volumes"] if v["name"] == git_dir["name"])
            assert "emptyDir" in volume, name  # a cache of the remote, gone with the pod
    assert workers == 2  # the short-job and the processing workers
