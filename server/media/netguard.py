"""Which network addresses a media fetch may dial (SSRF protection).

By default only globally routable unicast addresses pass. An operator may add non-public networks (an in-cluster object
store's CIDR) and, for development and tests, loopback. Some addresses stay refused whatever is configured: "this
network" (0.0.0.0/8, ``::``), link-local (cloud metadata at 169.254.169.254 included) and the known metadata addresses
outside it, multicast, loopback unless explicitly allowed, and IPv6 forms that embed any of these.

Python's ``ipaddress.is_global`` alone is not enough: it calls multicast, IPv4-compatible (``::a.b.c.d``), NAT64
(``64:ff9b::/96``), 6to4 (``2002::/16``) and Teredo addresses "global" even when they embed a loopback or private IPv4
address, so those embedded addresses are checked too. Written by hand because no well-kept library does exactly this;
the rules follow the IANA special-purpose registries that ``ipaddress`` encodes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPAT = ipaddress.IPv6Network("::/96")


def _networks(*pairs: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(cidr), reason) for cidr, reason in pairs)


# Never dialed, whatever the allow-list says: (network, the reason an operator reads when a list entry falls inside).
NEVER_DIALED = _networks(
    ("0.0.0.0/8", "the unspecified range ('this network')"),
    ("::/128", "the unspecified address"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("fe80::/10", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("ff00::/8", "multicast"),
    # Cloud metadata outside link-local: AWS IMDS over IPv6, Alibaba Cloud, Azure's WireServer.
    ("fd00:ec2::254/128", "cloud metadata"),
    ("100.100.100.200/32", "cloud metadata"),
    ("168.63.129.16/32", "cloud metadata"),
)
# Dialed only with --media-allow-loopback (development and tests), never through the allow-list.
LOOPBACK = _networks(
    ("127.0.0.0/8", "loopback (for development use --media-allow-loopback)"),
    ("::1/128", "loopback (for development use --media-allow-loopback)"),
)


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


def _within(ip: IPAddress, ranges: tuple[tuple[IPNetwork, str], ...]) -> bool:
    return any(ip in network for network, _ in ranges)


def _never_dialable(ip: IPAddress, *, allow_loopback: bool) -> bool:
    """Refused whatever the allow-list says; an IPv6 address also when the IPv4 address it embeds is."""
    if _within(ip, NEVER_DIALED):
        return True
    if _within(ip, LOOPBACK):  # before the embedding: ``::1`` is also IPv4-compatible ``0.0.0.1``
        return not allow_loopback
    embedded = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    # NAT64, 6to4, Teredo and IPv4-compatible forms lead to another host's loopback: never this machine's.
    return embedded is not None and (_within(embedded, NEVER_DIALED) or _within(embedded, LOOPBACK))


def may_dial(ip: IPAddress, allowed_networks: Iterable[IPNetwork] = (), *, allow_loopback: bool = False) -> bool:
    """Public, or in one of the operator's networks, or this machine's loopback when allowed; never ``NEVER_DIALED``.

    An IPv4-mapped address (``::ffff:10.0.0.1``) is judged as the IPv4 address it is on the wire.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if _never_dialable(ip, allow_loopback=allow_loopback):
        return False
    if is_public(ip) or (allow_loopback and _within(ip, LOOPBACK)):
        return True
    return any(ip in network for network in allowed_networks)


def all_dialable(
    addresses: Iterable[IPAddress], allowed_networks: Iterable[IPNetwork] = (), *, allow_loopback: bool = False
) -> bool:
    """A host passes only if every address it resolves to may be dialed: a mixed answer is refused whole."""
    found = list(addresses)
    networks = tuple(allowed_networks)
    return bool(found) and all(may_dial(ip, networks, allow_loopback=allow_loopback) for ip in found)


def parse_allowed_network(text: str) -> IPNetwork:
    """An allow-list entry: a CIDR without host bits, not inside a range that stays refused (ValueError says why)."""
    try:
        network = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a network in CIDR notation (e.g. 10.42.0.0/16): {exc}") from exc
    for refused, reason in (*NEVER_DIALED, *LOOPBACK):
        if network.version == refused.version and network.subnet_of(refused):  # type: ignore[arg-type]
            raise ValueError(f"{text!r} is {reason}: media fetches never reach it through the allow-list")
    return network


def parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


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
