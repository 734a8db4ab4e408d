"""gunicorn settings shared by every launcher: `gunicorn -c config/gunicorn.conf.py config.wsgi`.

The Dockerfile, deploy/k8s, bench/server.py and tests/processes.py all start gunicorn
with this file, so what the benchmarks measure is what is deployed. Flags given on the
command line (--bind, --workers) override the values here.

Request bodies need no help from here: since gunicorn 24 a Content-Length body is read
with recv() calls of up to 1 MiB (gunicorn 23 read 8 KiB at a time, which held uploads to
~120 MiB/s and needed a body-reader patch). tests/test_upload_speed.py fails if that
ever changes.

With PROMETHEUS_MULTIPROC_DIR set, every worker writes its metrics to <pid>.db files
there and GET /metrics sums them (registry/observability.py); the hooks below keep that
directory honest. tests/test_metrics_multiproc.py checks both.
"""

import os
import tempfile
from pathlib import Path

worker_class = "gthread"
threads = 4
timeout = 600  # a multi-GiB chunk on a slow link is one long request
# gunicorn 27's control socket (gunicornc) lives at one path per user ($HOME/.gunicorn):
# several servers on a host would take it from each other, and nothing here uses it.
control_socket_disable = True


# Every gunicorn counts across its workers, configured or not: without a directory each
# scrape would see one worker at random. One of its own per server (by the arbiter's pid),
# so servers sharing a /tmp never sum each other's files.
os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR",
    os.path.join(tempfile.gettempdir(), f"modelgate-prometheus-{os.getpid()}"),
)


def _multiproc_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def on_starting(server):
    # prometheus_client needs an empty directory per run: a counter file left by the last
    # run would be summed into this one's totals, under pids that may be reused.
    if path := _multiproc_dir():
        Path(path).mkdir(parents=True, exist_ok=True)
        for stale in Path(path).glob("*.db"):
            stale.unlink()


def post_worker_init(worker):
    # One per live worker ("livesum"): the scrape shows how many workers its sums cover.
    if _multiproc_dir():
        from prometheus_client import Gauge

        Gauge(
            "modelgate_web_workers",
            "gunicorn workers alive whose metrics this scrape sums.",
            multiprocess_mode="livesum",
        ).set(1)


def child_exit(server, worker):
    # Runs in the arbiter once a worker has gone, however it died: its live gauges go with
    # it (its counters stay, they are totals).
    if _multiproc_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
