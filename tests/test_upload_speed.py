"""The fast upload path, functionally: gunicorn as deployed (it reads bodies in large
pieces) and the local store's overlapped write + hash (storage/local.py).

Not timed: these check that reading large pieces never crosses a request's boundary, that a
short body is refused without counting a byte, and that every byte is still verified.
"""

import hashlib
import itertools
import os
import socket
import threading

import httpx
import pytest
from gunicorn.http.body import Body, LengthReader
from gunicorn.http.unreader import SocketUnreader

from registry.errors import IncompleteBody
from registry.storage import get_store, new_upload_id
from registry.storage.local import LocalBlobStore

from .conftest import sha256_of, token_for

MIB = 1024 * 1024


@pytest.fixture
def web(stack):
    return stack.web(stack.redis().url)


def declare_file(web, token: str, model: str, data: bytes, sha256: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.post(f"{web.url}/api/v1/models/", headers=headers, json={"name": model}).is_success
    created = httpx.post(
        f"{web.url}/api/v1/models/{model}/versions/",
        headers=headers,
        json={"files": [{"path": "m.bin", "size": len(data), "sha256": sha256 or sha256_of(data)}]},
    )
    assert created.status_code == 201, created.text
    return created.json()["uploads"][0]["url"]


def put_request(url: str, token: str, body: bytes, start: int, total: int, length=None) -> bytes:
    path = httpx.URL(url).raw_path.decode()
    end = start + (len(body) if length is None else length) - 1
    head = (
        f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {end - start + 1}\r\n"
        f"Content-Range: bytes {start}-{end}/{total}\r\n\r\n"
    )
    return head.encode() + body


def read_response(stream) -> tuple[int, bytes]:
    status = int(stream.readline().split()[1])
    headers = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") != "chunked":
        return status, stream.read(int(headers.get("content-length", 0)))
    body = b""
    while size := int(stream.readline().split(b";")[0], 16):
        body += stream.read(size)
        stream.readline()
    stream.readline()
    return status, body


def connect(web) -> socket.socket:
    return socket.create_connection(("127.0.0.1", web.port), timeout=60)


def test_pipelined_chunks_on_one_connection_stay_apart(web, alice):
    """A small chunk, a large one and the last one sent back to back on one keep-alive
    connection: gunicorn reads the first body and the next request's head together, and
    each large read must stop at its own body's end."""
    token = token_for(alice)
    data = os.urandom(3 * MIB + 123)
    url = declare_file(web, token, "piped", data)
    cuts = [0, 1000, 2 * MIB + 17, len(data)]
    requests = b"".join(
        put_request(url, token, data[a:b], a, len(data)) for a, b in itertools.pairwise(cuts)
    )
    with connect(web) as sock, sock.makefile("rb") as stream:
        sock.sendall(requests)
        answers = [read_response(stream) for _ in range(3)]
    assert [status for status, _ in answers] == [200, 200, 200], answers
    received = [httpx.Response(200, content=body).json()["received"] for _, body in answers]
    assert received == cuts[1:]
    got = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert got.status_code == 200 and got.content == data


def test_a_body_shorter_than_its_length_is_refused_and_not_counted(web, alice):
    token = token_for(alice)
    data = os.urandom(4 * MIB)
    url = declare_file(web, token, "short", data)
    with connect(web) as sock, sock.makefile("rb") as stream:
        sock.sendall(put_request(url, token, data[: 3 * MIB], 0, len(data), length=len(data)))
        sock.shutdown(socket.SHUT_WR)  # the client stops a MiB early
        status, body = read_response(stream)
    assert status == 400, body
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.head(url, headers=headers).headers["Upload-Offset"] == "0"
    # The same file then goes up whole and is served intact.
    response = httpx.put(url, content=data, headers=headers)
    assert response.status_code == 200 and response.json()["complete"] is True
    assert httpx.get(url, headers=headers).content == data


def test_every_byte_is_still_verified_through_gunicorn(web, alice):
    token = token_for(alice)
    good = os.urandom(5 * MIB)
    bad = bytearray(good)
    bad[4 * MIB + 5] ^= 1  # one bit in the last MiB
    url = declare_file(web, token, "verified", good)
    headers = {"Authorization": f"Bearer {token}"}
    for start in (0, 2 * MIB):  # two chunks: the digest is carried from one to the next
        end = 2 * MIB if start == 0 else len(bad)
        response = httpx.put(
            url,
            content=bytes(bad[start:end]),
            headers={**headers, "Content-Range": f"bytes {start}-{end - 1}/{len(bad)}"},
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "checksum_mismatch"
    assert httpx.head(url, headers=headers).headers["Upload-Complete"] == "false"
    assert httpx.get(url, headers=headers).status_code == 404
    assert not get_store().exists(sha256_of(bytes(bad)))


def test_a_multipart_upload_reads_the_same_bytes_through_gunicorn(web, alice):
    token = token_for(alice)
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.post(f"{web.url}/api/v1/models/", headers=headers, json={"name": "multi"})
    files = {"a.bin": os.urandom(3 * MIB + 7), "README.md": b"# multi\n"}
    created = httpx.post(
        f"{web.url}/api/v1/models/multi/versions/",
        headers=headers,
        data={"metadata": "{}"},
        files=[("files", (path, data)) for path, data in files.items()],
        timeout=60,
    )
    assert created.status_code == 201, created.text
    base = f"{web.url}/api/v1/models/multi/versions/{created.json()['version']}/files/"
    for path, data in files.items():
        assert httpx.get(base + path, headers=headers).content == data


class _CountingSocket:
    """One end of a socketpair that records the size of every recv the server asks for."""

    def __init__(self, sock: socket.socket):
        self._sock, self.sizes = sock, []

    def recv(self, size: int) -> bytes:
        self.sizes.append(size)
        return self._sock.recv(size)


def test_gunicorn_reads_a_large_body_in_large_pieces_and_stops_at_its_end():
    """What the upload speed rests on (gunicorn >= 24): a read of a large Content-Length body
    asks the socket for up to 1 MiB at a time, not 8 KiB, and never reads into the next
    request on a keep-alive connection."""
    ours, client = socket.socketpair()
    with ours, client:
        counting = _CountingSocket(ours)
        unreader = SocketUnreader(counting)
        unreader.unread(b"0123456789")  # what gunicorn read past the headers
        body = Body(LengthReader(unreader, 10 + 3 * MIB))
        payload = os.urandom(3 * MIB)
        sender = threading.Thread(target=client.sendall, args=(payload + b"NEXT REQUEST",))
        sender.start()
        assert body.read(4) == b"0123"
        assert body.read(8 * MIB) == b"456789" + payload
        sender.join()
        assert body.read(MIB) == b""  # the body is over; the next request is untouched
        assert unreader.read(12) == b"NEXT REQUEST"
        assert max(counting.sizes) >= MIB, counting.sizes
        assert len(counting.sizes) < 200, len(counting.sizes)  # 8 KiB reads would be ~400


class _Pieces:
    """A body stream handing out `data` in odd-sized pieces, failing after `fail_at` bytes."""

    def __init__(self, data: bytes, fail_at: int | None = None):
        self._data, self._at, self._fail_at = data, 0, fail_at

    def read(self, size: int) -> bytes:
        if self._fail_at is not None and self._at >= self._fail_at:
            raise ConnectionResetError("network dropped")
        piece = self._data[self._at : self._at + min(size, 300_001)]
        self._at += len(piece)
        return piece


def test_local_parts_are_written_and_hashed_in_order(tmp_path):
    store = LocalBlobStore(tmp_path)
    data = os.urandom(7 * MIB + 3)
    digest = hashlib.sha256(data).hexdigest()
    upload = new_upload_id()
    threads = threading.active_count()
    with pytest.raises(ConnectionResetError):  # a broken part leaves no helper running
        store.write_part(upload, 0, _Pieces(data[: 4 * MIB], fail_at=2 * MIB), 4 * MIB)
    assert threading.active_count() == threads
    with pytest.raises(IncompleteBody):
        store.write_part(upload, 0, _Pieces(data[:MIB]), 4 * MIB)
    store.write_part(upload, 0, _Pieces(data[: 4 * MIB]), 4 * MIB)
    store.write_part(upload, 4 * MIB, _Pieces(data[4 * MIB :]), len(data) - 4 * MIB)
    info = store.finish_upload(upload, len(data), digest)
    assert info.sha256 == digest
    with store.open(digest) as stored:
        assert stored.read() == data
