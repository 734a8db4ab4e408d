"""A local HTTP endpoint that records what it is sent (a webhook receiver for tests)."""

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """`host`/`port` choose where it listens (127.0.0.2 can stand in for a public host);
    with `tls` (a server SSLContext) it speaks HTTPS."""

    def __init__(
        self,
        fail_first: int = 0,
        status: int = 204,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ):
        self.requests: list[dict] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append(
                    {
                        "headers": dict(self.headers),
                        "body": body,
                        "json": json.loads(body or b"null"),
                    }
                )
                failing = len(receiver.requests) <= receiver.fail_first
                self.send_response(503 if failing else status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_port
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def of_type(self, event_type: str) -> list[dict]:
        return [r for r in self.requests if r["json"] and r["json"]["type"] == event_type]
