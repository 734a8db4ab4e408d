"""Where a webhook may be sent, and getting there without a second DNS lookup (SSRF).

A URL's host is resolved once and every address it gives must be public: an allow-list of
globally routable addresses, so private, loopback, link-local, shared, reserved and
multicast ranges are out, and so is any IPv6 form that leads to such an IPv4 address
(IPv4-mapped, NAT64, 6to4) or to any IPv4 address at all (IPv4-compatible, local-use
NAT64, Teredo). The request then connects to that checked address while still naming the
URL's host (Host header, TLS SNI, certificate check), so a name that answers with another
address a moment later (DNS rebinding) cannot redirect it.
"""

import ipaddress
import socket
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv6Address

import httpcore
import httpx

from registry.errors import InvalidInput

# (host, port) -> the addresses it resolves to, as strings. Injectable: DNS is an input.
Resolver = Callable[[str, int], list[str]]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the last 32 bits are the IPv4 address
# Refused whatever they embed: IPv4-compatible (::a.b.c.d, deprecated), IPv4-translated
# (SIIT), local-use NAT64 (RFC 8215, any prefix layout) and Teredo (relays reach any IPv4).
_TUNNELS = [
    ipaddress.ip_network(n) for n in ("::/96", "::ffff:0:0:0/96", "64:ff9b:1::/48", "2001::/32")
]


def embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFF_FFFF)
    return address.ipv4_mapped or address.sixtofour


def is_public(address: IPv4Address | IPv6Address) -> bool:
    """Globally routable and unicast, and so is any IPv4 address it carries."""
    if isinstance(address, IPv6Address):
        if any(address in network for network in _TUNNELS):
            return False
        inner = embedded_ipv4(address)
        if inner is not None and not is_public(inner):
            return False
    return address.is_global and not address.is_multicast


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def resolve_checked(host: str, port: int, resolve: Resolver, allow_private: bool) -> str:
    """The one address to connect to (the first found), once all `host` resolves to are
    allowed: a name with a private address among public ones is refused as a whole."""
    try:
        found = [ipaddress.ip_address(a) for a in resolve(host, port)]
    except (OSError, ValueError):
        found = []
    if not found:
        raise InvalidInput(f"'{host}' does not resolve.")
    for address in found:
        if not allow_private and not is_public(address):
            inner = embedded_ipv4(address) if isinstance(address, IPv6Address) else None
            shown = f"{address}, which carries {inner}" if inner else str(address)
            raise InvalidInput(
                f"'{host}' resolves to a non-public address ({shown}); refused. "
                "Set MODELGATE_WEBHOOK_ALLOW_PRIVATE=1 to allow private networks.",
                {"address": str(address)},
            )
    return str(found[0])


class PinnedNetwork(httpcore.NetworkBackend):
    """Every connection goes to one address, whatever host the request names."""

    def __init__(self, address: str, network: httpcore.NetworkBackend):
        self.address, self.network = address, network

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable | None = None,
    ) -> httpcore.NetworkStream:
        return self.network.connect_tcp(self.address, port, timeout, local_address, socket_options)

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise httpcore.ConnectError("webhooks are sent over TCP only")

    def sleep(self, seconds: float) -> None:
        self.network.sleep(seconds)


_ERRORS = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
)


class PinnedTransport(httpx.BaseTransport):
    """httpx over httpcore with its connections pinned to `address`. The URL keeps its host,
    so httpcore sends it as SNI and verifies the certificate for it. The response body is
    not read: the status is all a delivery needs, and a receiver could send gigabytes."""

    def __init__(self, address: str, network: httpcore.NetworkBackend | None = None):
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            network_backend=PinnedNetwork(address, network or httpcore.SyncBackend()),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        try:
            response = self._pool.handle_request(
                httpcore.Request(
                    request.method,
                    httpcore.URL(
                        scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
                    ),
                    headers=request.headers.raw,
                    content=request.stream,
                    extensions=request.extensions,
                )
            )
            response.close()
        except _ERRORS as exc:
            raise httpx.TransportError(str(exc) or type(exc).__name__) from exc
        return httpx.Response(response.status, headers=response.headers)

    def close(self) -> None:
        self._pool.close()
