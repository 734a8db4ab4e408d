"""Resident memory and CPU time of the server's processes, and of the benchmark itself.

RSS is sampled in a background thread; each sample re-lists the children of the root
process (the gunicorn master), so a worker restarted mid-run is still counted from its
first sample on. CPU time (user + system) is read at the start and end of a phase: with
the wall time it tells which side of a transfer was the bottleneck.
"""

from __future__ import annotations

import contextlib
import resource
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import psutil

from .core import MiB


def _tree(root_pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(root_pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss(root_pid: int) -> dict[int, int]:
    """{pid: RSS bytes} for `root_pid` and all its descendants that are alive."""
    rss = {}
    for process in _tree(root_pid):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            rss[process.pid] = process.memory_info().rss
    return rss


def tree_cpu(root_pid: int) -> float:
    """CPU seconds (user + system) used so far by `root_pid` and its live descendants."""
    total = 0.0
    for process in _tree(root_pid):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def bench_cpu() -> float:
    """CPU seconds of this process (all threads) and of the commands it has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class ServerUsage:
    """What the server used during one phase, against an RSS baseline taken before it."""

    baseline: dict[int, int]
    peak: dict[int, int] = field(default_factory=dict)
    peak_total: int = 0
    samples: int = 0
    cpu_seconds: float = 0.0

    def add(self, sample: dict[int, int]) -> None:
        self.samples += 1
        for pid, rss in sample.items():
            self.peak[pid] = max(self.peak.get(pid, 0), rss)
            self.baseline.setdefault(pid, rss)  # a process born mid-phase
        self.peak_total = max(self.peak_total, sum(sample.values()))

    def growth(self) -> dict[int, int]:
        return {pid: self.peak[pid] - self.baseline[pid] for pid in self.peak}

    @property
    def growth_max_mib(self) -> float:
        return max(self.growth().values(), default=0) / MiB

    @property
    def growth_sum_mib(self) -> float:
        return sum(max(g, 0) for g in self.growth().values()) / MiB

    @property
    def baseline_total_mib(self) -> float:
        return sum(self.baseline.values()) / MiB

    def to_json(self) -> dict[str, object]:
        return {
            "samples": self.samples,
            "cpu_seconds": round(self.cpu_seconds, 2),
            "baseline_total_mib": round(self.baseline_total_mib, 1),
            "peak_total_mib": round(self.peak_total / MiB, 1),
            "growth_max_mib": round(self.growth_max_mib, 1),
            "growth_sum_mib": round(self.growth_sum_mib, 1),
            "per_process": {
                str(pid): {
                    "baseline_mib": round(self.baseline[pid] / MiB, 1),
                    "peak_mib": round(self.peak[pid] / MiB, 1),
                }
                for pid in sorted(self.peak)
            },
        }


class UsageSampler:
    """Samples a process tree's RSS every `interval` seconds while `measure()` is open."""

    def __init__(self, root_pid: int, interval: float = 0.05):
        self.root_pid = root_pid
        self.interval = interval
        self.baseline: dict[int, int] = {}

    def take_baseline(self) -> dict[int, int]:
        self.baseline = tree_rss(self.root_pid)
        return self.baseline

    @contextlib.contextmanager
    def measure(self) -> Iterator[ServerUsage]:
        usage = ServerUsage(baseline=dict(self.baseline))
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                usage.add(tree_rss(self.root_pid))
                stop.wait(self.interval)

        thread = threading.Thread(target=sample, name="rss-sampler", daemon=True)
        cpu_before = tree_cpu(self.root_pid)
        thread.start()
        try:
            yield usage
        finally:
            stop.set()
            thread.join()
            usage.add(tree_rss(self.root_pid))  # the state right at the end counts too
            usage.cpu_seconds = tree_cpu(self.root_pid) - cpu_before


class Stopwatch:
    """Wall time and the benchmark's own CPU time of a `with` block."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self._wall, self._cpu = time.perf_counter(), bench_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._wall
        self.cpu_seconds = bench_cpu() - self._cpu
