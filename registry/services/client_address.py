"""Who is on the other end: the one answer to "which address sent this request".

X-Forwarded-For is anyone's to write, so it is read only when the peer (REMOTE_ADDR) is one
of MODELGATE_TRUSTED_PROXIES, and then from the right: each trusted proxy appends the address
it saw, so the right-most hop that is not itself a trusted proxy is the client. With no
trusted proxies, the header is ignored and the peer is the client. Lockouts, throttles and
anything else keyed on the client must use this, or a guesser picks a fresh address per try.
"""

import ipaddress
from functools import lru_cache

from django.conf import settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def trusted_proxies() -> tuple[Network, ...]:
    return _networks(tuple(settings.MODELGATE_TRUSTED_PROXIES))


def _parse(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # ::ffff:10.0.0.1 is 10.0.0.1: one client, one key, one trust decision.
    return getattr(address, "ipv4_mapped", None) or address


def _is_trusted(address, networks: tuple[Network, ...]) -> bool:
    return any(address in network for network in networks)


def is_trusted_proxy(text: str) -> bool:
    address = _parse(text)
    return address is not None and _is_trusted(address, trusted_proxies())


def client_address(request) -> str:
    """The client's address as text ("" when the peer's is unknown)."""
    meta = getattr(request, "META", {})
    peer = _parse(meta.get("REMOTE_ADDR", ""))
    if peer is None:
        return ""
    networks = trusted_proxies()
    if not _is_trusted(peer, networks):
        return str(peer)
    client = peer
    hops = meta.get("HTTP_X_FORWARDED_FOR", "").split(",")
    for hop in reversed(hops):
        address = _parse(hop)
        if address is None:
            break  # garbage left of a trusted hop was written by the client: stop there
        client = address
        if not _is_trusted(address, networks):
            break
    return str(client)
