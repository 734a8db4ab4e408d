"""A description of the machine, stored beside every result so numbers can be compared."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path
from typing import Any

from .server import postgres_version


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def ram_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024  # the kernel reports kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def filesystem(path: Path) -> dict[str, str] | None:
    """The mount (device, type) holding `path`: the longest mount point that contains it."""
    path = path.resolve()
    best: tuple[str, str, str] | None = None
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, fstype = line.split()[:3]
            if (path == Path(mount) or Path(mount) in path.parents) and (
                best is None or len(mount) > len(best[1])
            ):
                best = (device, mount, fstype)
    except (OSError, ValueError):
        return None
    return None if best is None else {"device": best[0], "mount": best[1], "type": best[2]}


def describe(workdir: Path) -> dict[str, Any]:
    usage = shutil.disk_usage(workdir)
    return {
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "ram_bytes": ram_bytes(),
        "disk_path": str(workdir),
        "disk_free_bytes": usage.free,
        "disk_total_bytes": usage.total,
        "filesystem": filesystem(workdir),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres": postgres_version(),
    }


def summary(machine: dict[str, Any]) -> str:
    gib = 1024**3
    fs = machine.get("filesystem") or {}
    pg = (machine.get("postgres") or "?").split(" on ")[0]
    return (
        f"{machine['cpu_model']} x {machine['cpu_cores']} cores, "
        f"{(machine['ram_bytes'] or 0) / gib:.1f} GiB RAM, "
        f"{machine['disk_free_bytes'] / gib:.0f} GiB free on {fs.get('type', '?')}, "
        f"Python {machine['python']}, {pg}"
    )
