"""gunicorn settings shared by every launcher: `gunicorn -c config/gunicorn.conf.py config.wsgi`.

The Dockerfile, deploy/k8s, bench/server.py and tests/processes.py all start gunicorn
with this file, so what the benchmarks measure is what is deployed. Flags given on the
command line (--bind, --workers) override the values here.
"""

from gunicorn.http.body import Body, LengthReader
from gunicorn.http.unreader import SocketUnreader

worker_class = "gthread"
threads = 4
timeout = 600  # a multi-GiB chunk on a slow link is one long request


class LargeReadBody(Body):
    """A Content-Length request body read from the socket in pieces as large as asked.

    gunicorn 23's Body.read gathers any size in 1 KiB reads, each a recv of at most
    8 KiB followed by BytesIO copies: about a thousand Python calls per MiB, which held
    uploads to ~120 MiB/s on two cores. Here a read of N bytes takes what gunicorn had
    already buffered with the headers, then fills one buffer with recv_into, never past
    the declared length (a keep-alive connection's next request stays in the socket).
    readline() and anything after a readline keep gunicorn's own code.
    """

    def __init__(self, reader: LengthReader):
        super().__init__(reader)
        self._unreader = reader.unreader

    def read(self, size=None):
        size = self.getsize(size)
        if self.buf.tell():  # a readline() left bytes behind: gunicorn's path serves them
            return super().read(size)
        wanted = min(size, self.reader.length)
        if wanted <= 0:
            return b""
        buffer = bytearray(wanted)
        view = memoryview(buffer)
        got = 0
        ahead = self._unreader.buf  # bytes read past the headers, if any
        ahead.seek(0, 2)
        if ahead.tell():
            head = self._unreader.read(min(wanted, ahead.tell()))
            view[: len(head)] = head
            got = len(head)
        sock = self._unreader.sock
        while got < wanted:
            received = sock.recv_into(view[got:], wanted - got)
            if not received:  # the client went away: a short read, as gunicorn's would be
                break
            got += received
        view.release()
        self.reader.length -= got
        return bytes(buffer) if got == wanted else bytes(buffer[:got])


def pre_request(worker, req):
    worker.log.debug("%s %s", req.method, req.path)  # what gunicorn's default hook does
    reader = getattr(req.body, "reader", None)
    if type(reader) is LengthReader and type(reader.unreader) is SocketUnreader:
        req.body = LargeReadBody(reader)
