"""Podman for tests/test_image.py: a Debian base built from the mirror, the image built on it.

Debian's podman runs containers as root here with runc, cgroupfs and no default ulimits
(containers.conf below). The base is a bookworm rootfs made by mmdebstrap from the mirror
apt uses, imported as localhost/modelgate-base:test; the tarball is kept in
var/image-cache, keyed by what goes into it. The image is built with podman's own layer
cache, whose dependency layer is keyed by the Dockerfile and pyproject.toml, so a code
change rebuilds only the layers holding code.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from urllib.parse import urlparse

from .processes import ROOT

CACHE = ROOT / "var" / "image-cache"
BASE_TAG = "localhost/modelgate-base:test"
PACKAGES = "python3,python3-venv,git,ca-certificates"
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
TOOLS = ("podman", "mmdebstrap", "runc", "podman-compose")
CONTAINERS_CONF = "[containers]\ndefault_ulimits = []\n"


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def image_tag() -> str:
    return f"localhost/modelgate:{version()}-test"


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if not shutil.which(tool)]


def podman_env() -> dict[str, str]:
    CACHE.mkdir(parents=True, exist_ok=True)
    conf = CACHE / "containers.conf"
    if not conf.exists() or conf.read_text() != CONTAINERS_CONF:
        conf.write_text(CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    argv = ["podman", "--runtime", "/usr/sbin/runc", "--cgroup-manager=cgroupfs", *args]
    result = subprocess.run(argv, env=podman_env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv[:8])} failed:\n{result.stdout}\n{result.stderr}")
    return result


def debian_mirror() -> str:
    """The first Debian archive apt is configured with (deb822), as mmdebstrap wants it."""
    for stanza in SOURCES.read_text().split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.+)$", stanza, re.MULTILINE))
        if "bookworm" in fields.get("Suites", "").split() and "security" not in stanza:
            return f"deb {fields['URIs'].split()[0]} bookworm {fields['Components']}"
    raise AssertionError(f"no bookworm archive in {SOURCES}")


def base_image() -> dict[str, float]:
    """localhost/modelgate-base:test, from the cached tarball or a fresh mmdebstrap run."""
    argv = ["mmdebstrap", "--variant=apt", f"--include={PACKAGES}", "bookworm"]
    mirror = debian_mirror()
    key = hashlib.sha256(f"{argv}{mirror}{SOURCES.read_text()}".encode()).hexdigest()[:16]
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / f"base-{key}.tar"
    timings: dict[str, float] = {}
    if not tarball.exists():
        for stale in CACHE.glob("base-*.tar"):
            stale.unlink()
        started = time.monotonic()
        partial = tarball.with_suffix(".partial.tar")
        result = subprocess.run(
            [*argv, str(partial), mirror], capture_output=True, text=True, timeout=1200
        )
        assert result.returncode == 0, result.stderr[-5000:]
        partial.rename(tarball)
        timings["mmdebstrap"] = time.monotonic() - started
    imported = CACHE / f"base-{key}.imported"
    current = podman("image", "inspect", "--format", "{{.Id}}", BASE_TAG, check=False)
    if current.returncode != 0 or not imported.exists() or imported.read_text() != current.stdout:
        started = time.monotonic()
        podman("import", str(tarball), BASE_TAG, timeout=600)
        imported.write_text(podman("image", "inspect", "--format", "{{.Id}}", BASE_TAG).stdout)
        timings["import"] = time.monotonic() - started
    return timings


def pip_settings() -> tuple[str, list[str]]:
    """The host's effective pip settings as one pip.conf, and the local paths they name.

    The build reads the file as a secret (never a layer) and gets the paths mounted
    read-only, so pip inside the build uses exactly the indexes pip uses here.
    """
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    settings: dict[str, str] = {}
    # The environment's PIP_* win over the files, as they do for pip.
    for line in sorted(listed.splitlines(), key=lambda line: not line.startswith(":env:")):
        name, _, value = line.partition("=")
        key = name.rsplit(".", 1)[-1]
        settings.setdefault(key, value.strip().strip("'\""))
    paths = set()
    for value in settings.values():
        for item in value.split():
            # a file:// index's pages link to files beside it (../files/), so its parent
            path = Path(urlparse(item).path).parent if item.startswith("file://") else Path(item)
            if path.is_absolute() and path.exists():
                paths.add(str(path if path.is_dir() else path.parent))
    conf = "[global]\n" + "".join(f"{key} = {value}\n" for key, value in settings.items())
    return conf, sorted(paths)


def build_image(workdir: Path) -> float:
    """podman build of the repository's Dockerfile on the Debian base; returns seconds."""
    conf, paths = pip_settings()
    secret = workdir / "pip.conf"
    secret.write_text(conf)
    mounts = ["/etc/ssl/certs", *(p for p in paths if not p.startswith("/etc/ssl/certs"))]
    started = time.monotonic()
    podman(
        "build",
        "--network",
        "host",
        *(arg for path in mounts for arg in ("-v", f"{path}:{path}:ro")),
        "--secret",
        f"id=pip.conf,src={secret}",
        "--build-arg",
        f"BASE={BASE_TAG}",
        "--build-arg",
        f"VERSION={version()}",
        "-t",
        image_tag(),
        str(ROOT),
        timeout=1800,
    )
    return time.monotonic() - started


def run_container(name: str, env: dict[str, str], volumes: dict[Path, str], *command: str):
    """A detached container of the image on the host's network (Postgres, Redis, ports)."""
    args = ["run", "--detach", "--name", name, "--network", "host"]
    args += [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]
    args += [arg for src, dst in volumes.items() for arg in ("--volume", f"{src}:{dst}")]
    podman(*args, image_tag(), *command)


def logs(name: str) -> str:
    result = podman("logs", name, check=False)
    return (result.stdout + result.stderr)[-5000:]


def remove(*names: str) -> None:
    for name in names:
        podman("rm", "--force", "--time", "10", name, check=False)
