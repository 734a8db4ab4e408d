"""GET /metrics sums django-prometheus' counters over every gunicorn worker.

Real gunicorn with config/gunicorn.conf.py and three workers, PROMETHEUS_MULTIPROC_DIR
set. Requests go out on fresh connections until each worker has served some (each
worker's counters are in its own counter_<pid>.db, which the test reads too); then every
scrape, whichever worker answers it, must count all of them. A worker killed with SIGKILL
must leave the live-worker gauge (child_exit), and a counter file left by an earlier run
must not be summed in (on_starting).
"""

import argparse
import importlib.util
import json
import os
import re
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families

from .processes import ROOT, Web, base_env, wait_until

WORKERS = 3
BATCH = 60
BY_VIEW = "django_http_requests_total_by_view_transport_method_total"
BY_METHOD = "django_http_requests_total_by_method_total"
STALE = 1000  # what a previous run's file would add, if on_starting left it


def plant_stale_counter(directory: Path) -> None:
    """A counter file as a previous run leaves it: favicon requests by a pid long gone."""
    labels = ["method", "transport", "view"]
    key = mmap_key(BY_VIEW.removesuffix("_total"), BY_VIEW, labels, ["GET", "http", "favicon"], "")
    stale = MmapedDict(str(directory / "counter_4000000.db"))
    stale.write_value(key, STALE, 0)
    stale.close()


@pytest.fixture
def web(tmp_path, transactional_db):
    directory = tmp_path / "prometheus"
    directory.mkdir()
    plant_stale_counter(directory)
    env = base_env(
        settings.CELERY_BROKER_URL,
        PROMETHEUS_MULTIPROC_DIR=str(directory),
        MODELGATE_METRICS_TOKEN="",  # loopback scrapes are allowed without a token
    )
    server = Web(env, tmp_path, workers=WORKERS)
    server.directory = directory
    try:
        yield server.start()
    finally:
        server.stop()


def pid_files(directory: Path, prefix: str) -> dict[int, Path]:
    found = {}
    for path in directory.glob(f"{prefix}_*.db"):
        found[int(re.fullmatch(rf"{prefix}_(\d+)\.db", path.name).group(1))] = path
    return found


def favicons_by_pid(directory: Path) -> dict[int, float]:
    """Each worker's own count of favicon requests, read from its counter file."""
    counts = {}
    for pid, path in pid_files(directory, "counter").items():
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
            _, name, labels, _ = json.loads(key)
            if name == BY_VIEW and labels.get("view") == "favicon":
                counts[pid] = counts.get(pid, 0) + value
    return counts


def fetch_favicon(url: str) -> int:
    # A client of its own per request: a fresh connection, so any worker may accept it.
    with httpx.Client(timeout=30) as client:
        return client.get(f"{url}/favicon.ico").status_code


def scrape(web: Web) -> dict[tuple[str, tuple], float]:
    response = httpx.get(f"{web.url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and labels.items() <= dict(sample_labels).items()
    )


def serve_on_every_worker(web: Web) -> int:
    """Send batches of favicon requests until every worker has served some; return how many."""
    sent = 0
    with ThreadPoolExecutor(6) as pool:
        while sent < 10 * BATCH:
            statuses = list(pool.map(fetch_favicon, [web.url] * BATCH))
            assert set(statuses) == {200}, statuses
            sent += BATCH
            served = favicons_by_pid(web.directory)
            if sum(1 for n in served.values() if 0 < n < STALE) >= WORKERS:
                return sent
    raise AssertionError(f"after {sent} requests only these workers served: {served}")


def test_every_scrape_counts_the_requests_of_all_workers(web):
    assert not (web.directory / "counter_4000000.db").exists()  # on_starting emptied it
    sent = serve_on_every_worker(web)
    served = favicons_by_pid(web.directory)
    assert len(served) == WORKERS and sum(served.values()) == sent, served

    scrapes = [scrape(web) for _ in range(5)]
    others = set()
    for number, samples in enumerate(scrapes, start=1):
        assert total(samples, BY_VIEW, view="favicon") == sent
        # The scrape counts itself before it is answered, whichever worker answers it.
        assert total(samples, BY_VIEW, view="metrics") == number
        everything = total(samples, BY_METHOD)
        assert everything >= sent + number
        others.add(everything - sent - number)  # gunicorn's start-up health checks
        assert total(samples, "modelgate_web_workers") == WORKERS
    assert len(others) == 1, others  # nothing else moved between scrapes
    # Only live gauges: a gauge in another mode (django-prometheus' migration gauges with
    # PROMETHEUS_EXPORT_MIGRATIONS) would keep every dead worker in the scrape.
    gauges = {p.name for p in web.directory.glob("gauge_*.db")}
    assert gauges and all(name.startswith("gauge_live") for name in gauges), gauges


def test_a_killed_workers_live_gauge_is_marked_dead(web):
    sent = serve_on_every_worker(web)
    live = pid_files(web.directory, "gauge_livesum")
    assert len(live) == WORKERS
    victim = min(live)
    os.kill(victim, signal.SIGKILL)

    def replaced():
        now = pid_files(web.directory, "gauge_livesum")
        return len(now) == WORKERS and victim not in now

    wait_until(replaced, 60, "the arbiter to reap the worker and start another", web)
    samples = scrape(web)
    assert total(samples, "modelgate_web_workers") == WORKERS
    # The dead worker's counters still count: they are totals, and child_exit keeps them.
    assert (web.directory / f"counter_{victim}.db").exists()
    assert total(samples, BY_VIEW, view="favicon") == sent


def run_local_args() -> argparse.Namespace:
    return argparse.Namespace(host="127.0.0.1", port=8000, web_workers=2, worker_concurrency=2)


def test_make_run_gives_gunicorn_alone_a_directory_under_var(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("run_local", ROOT / "deploy" / "run_local.py")
    run_local = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_local)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setenv("MODELGATE_VAR_DIR", str(tmp_path))
    supervisor = run_local.Supervisor(run_local_args())
    assert set(supervisor.commands()) == {"web", "worker", "beat"}
    web = supervisor.environment("web")
    assert web["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path.resolve() / "prometheus")
    for celery in ("worker", "beat"):  # their metrics are not served by /metrics
        assert "PROMETHEUS_MULTIPROC_DIR" not in supervisor.environment(celery)
