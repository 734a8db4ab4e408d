"""The packaged serve.py under hostile or heavy traffic and at shutdown: the real serve.py of
a built package, in its own process, with raw sockets for clients that are slow on purpose.
What the server holds is read from the kernel (/proc), not from the server's own word."""

import json
import os
import select
import signal
import socket
import time
from pathlib import Path

import pytest

from .conftest import wait_for
from .receivers import Receiver
from .test_capture import Serving, package  # noqa: F401 - package is a fixture

NO_CAPTURE = {"MODELGATE_URL": "", "MODELGATE_INGEST_TOKEN": ""}
BODY = json.dumps({"instances": [[0.5, -1.0, 2.0]]}).encode()


def sockets_of(pid: int, port: int) -> tuple[int, int]:
    """(connections to `port` the process has accepted, connections the kernel has completed
    that wait in the listening socket's accept queue)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    accepted = waiting = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues, inode = fields[1], fields[3], fields[4], fields[9]
        if int(local.rsplit(":", 1)[1], 16) != port:
            continue
        if state == "0A":  # LISTEN: its rx_queue is the length of the accept queue
            waiting = int(queues.split(":")[1], 16)
        elif state == "01" and inode in inodes:  # ESTABLISHED, and held by the process
            accepted += 1
    return accepted, waiting


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def connect(serving: Serving) -> socket.socket:
    return socket.create_connection(("127.0.0.1", serving.port), timeout=10)


def predict_head(request_id: str, length: int = len(BODY)) -> bytes:
    return (
        f"POST /predict HTTP/1.0\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nX-Request-Id: {request_id}\r\n\r\n"
    ).encode()


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed the connection without a word (EOF or a reset)."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        data = sock.recv(4096)
    except ConnectionResetError:
        return True
    assert data == b"", f"the server answered instead of closing: {data[:200]!r}"
    return True


def answer(sock: socket.socket) -> tuple[int, dict[str, str], dict]:
    """Read an HTTP/1.0 answer to its end (the server closes the connection after it)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    assert data, "the server closed the connection without answering"
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, json.loads(body)


def test_slow_clients_are_cut_off_after_the_timeout_while_others_are_answered(package):  # noqa: F811
    serving = Serving(
        package, MODELGATE_SERVE_TIMEOUT="2", MODELGATE_SERVE_THREADS="4", **NO_CAPTURE
    )
    try:
        opened = time.monotonic()
        silent = connect(serving)  # connects, then sends nothing
        dribbler = connect(serving)  # a header byte every 0.25 s: slowloris
        half = connect(serving)  # whole headers, half the body
        half.sendall(predict_head("half") + BODY[: len(BODY) // 2])
        dribble = iter(predict_head("dribble")[:-4] + b"\r\nX-Pad: " + b"a" * 10_000)
        slow = {"silent": silent, "dribbler": dribbler, "half": half}
        closed_at: dict[str, float] = {}
        answered_meanwhile = 0
        while len(closed_at) < len(slow):
            assert time.monotonic() - opened < 30, f"still open: {set(slow) - set(closed_at)}"
            if "dribbler" not in closed_at:
                try:
                    dribbler.send(bytes([next(dribble)]))
                except (BrokenPipeError, ConnectionResetError):
                    closed_at["dribbler"] = time.monotonic()
            other = serving.predict([[1.0, 2.0, 3.0]])  # a fourth worker is free for it
            if not closed_at:
                answered_meanwhile += other.status_code == 200
            for name, sock in slow.items():
                if name not in closed_at and closed_by_server(sock):
                    closed_at[name] = time.monotonic()
            time.sleep(0.25)  # the dribbler's pace, not a wait for the server
        for name, at in closed_at.items():
            # Never before the deadline (the dribbler kept each recv under it), soon after.
            assert 2.0 <= at - opened < 10.0, (name, at - opened)
        assert answered_meanwhile >= 1
        metrics = serving.metrics()
        assert metrics["modelgate_serve_timeouts_total"] == 3
        assert metrics['modelgate_serve_requests_total{path="/predict",status="200"}'] >= 3
    finally:
        serving.stop()
        for sock in (silent, dribbler, half):
            sock.close()
    assert serving.output().count("Request timed out") == 3


def test_many_connections_use_a_fixed_pool_of_threads_and_a_bounded_queue(package):  # noqa: F811
    threads, backlog, clients = 3, 40, 80
    serving = Serving(
        package,
        MODELGATE_SERVE_THREADS=str(threads),
        MODELGATE_SERVE_BACKLOG=str(backlog),
        **NO_CAPTURE,
    )
    pid = serving.proc.pid
    socks: list[socket.socket] = []
    try:
        idle = threads_of(pid)
        for index in range(clients):  # each holds its request open: half the body sent
            socks.append(sock := connect(serving))
            sock.sendall(predict_head(f"pool-{index}") + BODY[:10])
        # Every worker busy, the queue full, one more in the accept loop's hand: the other
        # connections wait in the kernel, not in threads or memory of the server.
        held = threads + backlog + 1
        assert wait_for(lambda: sockets_of(pid, serving.port) == (held, clients - held), 20)
        assert threads_of(pid) == idle
        most = idle
        for sock in socks:
            sock.sendall(BODY[10:])
            most = max(most, threads_of(pid))
        for index, sock in enumerate(socks):
            status, headers, _ = answer(sock)
            assert (status, headers["x-request-id"]) == (200, f"pool-{index}")
            most = max(most, threads_of(pid))
        assert most == idle
        metrics = serving.metrics()
        assert metrics['modelgate_serve_requests_total{path="/predict",status="200"}'] == clients
        assert metrics["modelgate_serve_busy_workers"] == 1  # this scrape
        assert metrics["modelgate_serve_queued_connections"] == 0
    finally:
        serving.stop()
        for sock in socks:
            sock.close()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_drains_every_request_in_flight_and_flushes_their_capture(
    package,  # noqa: F811
    tmp_path,
    signum,
):
    with Receiver(status=202) as registry:
        serving = Serving(
            package,
            MODELGATE_URL=f"http://127.0.0.1:{registry.server.server_port}",
            MODELGATE_INGEST_TOKEN="mgt_ingest_secret",
            MODELGATE_SPOOL_DIR=str(tmp_path / "spool"),
            MODELGATE_CAPTURE_INTERVAL="3600",  # nothing is sent before the drain
            MODELGATE_SERVE_DRAIN_SECONDS="20",
        )
        pid, ids = serving.proc.pid, [f"drain-{index}" for index in range(20)]
        socks = []
        try:
            for request_id in ids:  # 8 workers mid-read, 12 accepted and queued
                socks.append(sock := connect(serving))
                sock.sendall(predict_head(request_id) + BODY[:10])
            assert wait_for(lambda: sockets_of(pid, serving.port) == (20, 0), 20)

            serving.proc.send_signal(signum)
            wait_for(lambda: refused(serving.port), 10)  # no new connection is taken
            assert serving.proc.poll() is None and registry.requests == []
            for sock in socks:
                sock.sendall(BODY[10:])
            answers = [answer(sock) for sock in socks]
            assert [(s, h["x-request-id"]) for s, h, _ in answers] == [(200, i) for i in ids]
            assert all(body["predictions"] in ([0], [1]) for _, _, body in answers)
            assert serving.proc.wait(timeout=20) == 0, serving.output()
        finally:
            serving.stop()
            for sock in socks:
                sock.close()
    records = [r for request in registry.requests for r in request["json"]["records"]]
    assert sorted(r["request_id"] for r in records) == sorted(ids)  # each once
    assert {r["model"] for r in records} == {"churn"}
    assert registry.requests[0]["headers"]["Authorization"] == "Bearer mgt_ingest_secret"
    assert not list((tmp_path / "spool").glob("*.jsonl"))
    assert "drained: every request answered" in serving.output()


def test_a_drain_that_outlasts_its_grace_period_exits_nonzero_keeping_the_capture(
    package,  # noqa: F811
    tmp_path,
):
    spool = tmp_path / "spool"
    serving = Serving(
        package,
        MODELGATE_URL="http://127.0.0.1:9",  # nothing listens: records stay in the spool
        MODELGATE_INGEST_TOKEN="mgt_ingest_secret",
        MODELGATE_SPOOL_DIR=str(spool),
        MODELGATE_CAPTURE_INTERVAL="3600",
        MODELGATE_SERVE_DRAIN_SECONDS="1",
    )
    stuck = connect(serving)
    try:
        served = serving.predict([[1.0, 2.0, 3.0]]).headers["X-Request-ID"]
        stuck.sendall(predict_head("stuck") + BODY[:10])  # never finished
        assert wait_for(lambda: sockets_of(serving.proc.pid, serving.port)[0] == 1, 20)
        signalled = time.monotonic()
        serving.proc.terminate()
        assert serving.proc.wait(timeout=10) == 1
        assert time.monotonic() - signalled < 5
    finally:
        serving.stop()
        stuck.close()
    assert "drained for 1.0s, connections unfinished: 1" in serving.output()
    kept = [json.loads(line) for path in spool.glob("*.jsonl") for line in path.open()]
    assert [r["request_id"] for r in kept] == [served]
