"""Which network addresses a media fetch may dial (SSRF protection).

Only globally routable unicast addresses pass. Python's ``ipaddress.is_global`` alone is not enough: it calls multicast,
IPv4-compatible (``::a.b.c.d``), NAT64 (``64:ff9b::/96``), 6to4 (``2002::/16``) and Teredo addresses "global" even when
they embed a loopback or private IPv4 address, so those embedded addresses are checked too. Written by hand because no
well-kept library does exactly this; the rules follow the IANA special-purpose registries that ``ipaddress`` encodes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPAT = ipaddress.IPv6Network("::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _IPV4_COMPAT or ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def is_public(ip: IPAddress) -> bool:
    """True only for a globally routable unicast address (and, for IPv6, one that embeds no non-public IPv4)."""
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.is_link_local or ip.is_reserved:
        return False
    if ip.is_private or not ip.is_global:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL or ip.is_site_local:
            return False
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_public(embedded)
    return True


def parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def all_public(addresses: Iterable[IPAddress]) -> bool:
    """A host passes only if every address it resolves to is public: a mixed answer is refused whole."""
    found = list(addresses)
    return bool(found) and all(is_public(ip) for ip in found)


def _ascii_host(name: str) -> str:
    """IDNA (punycode) form, as httpx puts it on the wire, so a Unicode list entry matches its encoded host."""
    import idna  # installed with httpx, which uses it for the same conversion

    name = name.strip().rstrip(".").lower()
    leading = "." if name.startswith(".") else ""
    try:
        return leading + idna.encode(name.lstrip("."), uts46=True).decode("ascii")
    except idna.IDNAError:
        return leading + name.lstrip(".")


def host_matches(host: str, patterns: Iterable[str]) -> bool:
    """``example.com`` matches itself and its subdomains; ``.example.com`` only subdomains (IDNA-normalized)."""
    host = _ascii_host(host)
    for raw in patterns:
        pattern = _ascii_host(raw)
        if pattern.startswith("."):
            if host.endswith(pattern):
                return True
        elif host == pattern or host.endswith("." + pattern):
            return True
    return False
