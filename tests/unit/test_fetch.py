"""The fetcher under a policy: caps, deadlines, schemes, and SSRF rules (with a fake resolver and httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from server.errors import (
    MediaBlockedError,
    MediaDecodeError,
    MediaFetchError,
    MediaTimeoutError,
    MediaTooLargeError,
)
from server.media.fetch import Fetcher, FetchPolicy, decode_data_url
from server.media.netguard import IPAddress, is_public, may_dial, parse_allowed_network, parse_ip

PARAM = "messages[0].content[0].image_url"
PUBLIC = "93.184.216.34"

Handler = Callable[[httpx.Request], httpx.Response]


def resolver(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[IPAddress]:
        if host not in table:
            raise OSError("no such host")
        return [ip for ip in (parse_ip(a) for a in table[host]) if ip is not None]

    return resolve


def fetcher(handler: Handler, *, table: dict[str, list[str]] | None = None, **policy: object) -> Fetcher:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), follow_redirects=False)
    return Fetcher(FetchPolicy(resolver=resolver(table or {"media.test": [PUBLIC]}), **policy), client)  # type: ignore[arg-type]


async def get(f: Fetcher, url: str, max_bytes: int = 100, timeout_s: float = 5) -> bytes:
    return await f.fetch(url, max_bytes=max_bytes, timeout_s=timeout_s, param=PARAM)


# --- data URLs ---------------------------------------------------------------------------------------------------------


def test_data_url_roundtrip() -> None:
    payload = b"\x89PNG\r\n\x1a\n" + b"x" * 100
    url = "data:image/png;base64," + base64.b64encode(payload).decode()
    assert decode_data_url(url, max_bytes=1000, param=PARAM) == payload


def test_data_url_over_cap_is_refused_by_encoded_length() -> None:
    with pytest.raises(MediaTooLargeError) as info:
        decode_data_url("data:image/png;base64," + "A" * 1400, max_bytes=1000, param=PARAM)
    assert info.value.param == PARAM and "1000 bytes" in info.value.message


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png;base64",
        "data:image/png,rawtext",
        "data:image/png;base64,!!!notbase64$$$",
        "data:image/png;base64,",
        "data:image/png;base64,QUJD\nREVG",  # strict: no embedded line breaks
        "data:image/png;base64,QUJ",  # bad padding
    ],
)
def test_bad_data_urls(url: str) -> None:
    with pytest.raises(MediaDecodeError):
        decode_data_url(url, max_bytes=1000, param=PARAM)


# --- plain http behaviour ----------------------------------------------------------------------------------------------


async def test_http_fetch_dials_the_validated_address_with_host_and_sni() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"abc")

    f = fetcher(handler)
    assert await get(f, "https://media.test/a.png") == b"abc"
    assert await get(f, "http://media.test:8080/a.png") == b"abc"
    assert seen[0].url.host == PUBLIC and seen[0].headers["host"] == "media.test"
    assert seen[0].extensions["sni_hostname"] == "media.test"
    assert seen[1].url.host == PUBLIC and seen[1].url.port == 8080 and seen[1].headers["host"] == "media.test:8080"


async def test_http_error_status_is_a_400_class_error() -> None:
    with pytest.raises(MediaFetchError) as info:
        await get(fetcher(lambda r: httpx.Response(404)), "http://media.test/a.png")
    assert info.value.status_code == 400 and "HTTP 404" in info.value.message


async def test_body_cap_enforced_while_streaming_without_content_length() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 80
        yield b"x" * 80

    with pytest.raises(MediaTooLargeError):
        await get(fetcher(lambda r: httpx.Response(200, content=body())), "http://media.test/big")


async def test_lying_content_length_refused_up_front() -> None:
    f = fetcher(lambda r: httpx.Response(200, headers={"content-length": "999999"}, content=b"x"))
    with pytest.raises(MediaTooLargeError):
        await get(f, "http://media.test/big")


async def test_connect_and_dns_errors_are_fetch_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(MediaFetchError) as info:
        await get(fetcher(refuse), "http://media.test/a.png")
    assert "could not connect" in info.value.message
    with pytest.raises(MediaFetchError) as info:
        await get(fetcher(refuse), "http://unknown.test/a.png")
    assert "could not be resolved" in info.value.message


async def test_total_deadline() -> None:
    async def slow_body() -> AsyncIterator[bytes]:
        yield b"x"
        await asyncio.sleep(5)
        yield b"y"

    with pytest.raises(MediaTimeoutError) as info:
        await get(fetcher(lambda r: httpx.Response(200, content=slow_body())), "http://media.test/slow", timeout_s=0.2)
    assert info.value.code == "media_timeout" and "0.2 s" in info.value.message


# --- SSRF rules --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # shared / CGNAT
        "0.0.0.0",
        "224.0.0.1",  # multicast
        "::1",
        "fd00::1",  # unique-local
        "fe80::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::7f00:1",  # IPv4-compatible
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
    ],
)
def test_non_public_addresses(address: str) -> None:
    ip = parse_ip(address)
    assert ip is not None and not is_public(ip)


def test_public_addresses() -> None:
    for address in (PUBLIC, "8.8.8.8", "2606:4700:4700::1111"):
        ip = parse_ip(address)
        assert ip is not None and is_public(ip)


@pytest.mark.parametrize(
    ("url", "table"),
    [
        ("http://127.0.0.1/a.png", {}),
        ("http://[::1]/a.png", {}),
        ("http://[::ffff:10.0.0.1]/a.png", {}),
        ("http://metadata.test/latest", {"metadata.test": ["169.254.169.254"]}),
        ("http://mixed.test/a.png", {"mixed.test": [PUBLIC, "10.0.0.7"]}),  # a mixed answer is refused whole
        ("http://localhost./a.png", {"localhost": ["127.0.0.1"]}),  # trailing dot
        ("http://user:pw@media.test/a.png", {"media.test": [PUBLIC]}),  # userinfo
        ("http://media.test\\@127.0.0.1/a.png", {"media.test": [PUBLIC]}),  # backslash trick
    ],
)
async def test_blocked_targets_are_never_dialed(url: str, table: dict[str, list[str]]) -> None:
    dialed: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        dialed.append(request)
        return httpx.Response(200, content=b"secret")

    with pytest.raises(MediaBlockedError) as info:
        await get(fetcher(handler, table=table), url)
    assert dialed == []
    assert info.value.code == "media_blocked" and info.value.status_code == 400
    for leaked in ("127.0.0.1", "10.0.0.7", "169.254", "::1"):
        assert leaked not in info.value.message


async def test_odd_ipv4_spellings_resolve_to_loopback_and_are_blocked() -> None:
    # The system resolver turns these into 127.0.0.1 (inet_aton rules); the check runs on what was resolved.
    dialed: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        dialed.append(str(request.url))
        return httpx.Response(200, content=b"x")

    for spelling in ("2130706433", "0x7f000001", "0177.0.0.1", "127.1"):
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        with pytest.raises((MediaBlockedError, MediaFetchError)):
            await Fetcher(FetchPolicy(), client).fetch(
                f"http://{spelling}/a.png", max_bytes=10, timeout_s=5, param=PARAM
            )
        assert dialed == []


async def test_redirects_are_revalidated_at_every_hop() -> None:
    dialed: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        dialed.append(request.headers["host"])
        if request.url.path == "/start":
            return httpx.Response(302, headers={"location": "http://internal.test/secret"})
        return httpx.Response(200, content=b"secret")

    table = {"media.test": [PUBLIC], "internal.test": ["10.0.0.5"]}
    with pytest.raises(MediaBlockedError):
        await get(fetcher(handler, table=table), "http://media.test/start")
    assert dialed == ["media.test"]  # the private target was never dialed


async def test_redirect_hop_cap_and_relative_redirects() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/final":
            return httpx.Response(200, content=b"ok")
        n = int(request.url.path.strip("/") or 0)
        return httpx.Response(302, headers={"location": "/final" if n >= 2 else f"/{n + 1}"})

    assert await get(fetcher(handler, max_redirects=3), "http://media.test/0") == b"ok"
    with pytest.raises(MediaFetchError) as info:
        await get(fetcher(handler, max_redirects=2), "http://media.test/0")
    assert "redirects" in info.value.message


async def test_redirect_to_another_scheme_is_blocked() -> None:
    f = fetcher(lambda r: httpx.Response(302, headers={"location": "file:///etc/passwd"}))
    with pytest.raises(MediaBlockedError):
        await get(f, "http://media.test/x")


async def test_allow_and_deny_lists() -> None:
    table = {"cdn.example.com": [PUBLIC], "evil.test": [PUBLIC], "img.cdn.example.com": [PUBLIC]}
    ok = lambda r: httpx.Response(200, content=b"ok")  # noqa: E731
    f = fetcher(ok, table=table, allowed_domains=("cdn.example.com",))
    assert await get(f, "http://img.cdn.example.com/a") == b"ok"
    with pytest.raises(MediaBlockedError):
        await get(f, "http://evil.test/a")
    f = fetcher(ok, table=table, denied_domains=("evil.test",))
    with pytest.raises(MediaBlockedError):
        await get(f, "http://EVIL.test./a")


STORE = (ipaddress.ip_network("10.42.0.0/16"), ipaddress.ip_network("fd12:3456::/32"))
# Entries no list can open: the policy still refuses them if a FetchPolicy is built with them directly.
FUTILE = tuple(
    ipaddress.ip_network(n)
    for n in ("127.0.0.0/8", "::1/128", "169.254.0.0/16", "0.0.0.0/8", "::ffff:0:0/96", "64:ff9b::/96", "fe80::/10")
)


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.42.7.9", True),  # in the list
        ("::ffff:10.42.7.9", True),  # the same IPv4 address, mapped
        ("fd12:3456::9", True),
        ("10.43.0.1", False),  # private, not in the list
        ("192.168.1.1", False),
        ("fd00::1", False),
        ("2002:a2a:709::1", False),  # 6to4 of 10.42.7.9: another host's gateway, not the store
        (PUBLIC, True),  # public stays allowed
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),  # loopback, even listed
        ("::1", False),
        ("::ffff:127.0.0.1", False),
        ("::7f00:1", False),  # IPv4-compatible loopback
        ("64:ff9b::7f00:1", False),  # NAT64 of loopback, even with 64:ff9b::/96 listed
        ("2002:7f00:1::1", False),  # 6to4 of loopback
        ("169.254.169.254", False),  # metadata, even listed
        ("::ffff:169.254.169.254", False),
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of the metadata address
        ("fd00:ec2::254", False),  # AWS metadata over IPv6
        ("100.100.100.200", False),  # Alibaba Cloud metadata
        ("fe80::1", False),
        ("0.0.0.0", False),  # unspecified / "this network", even listed
        ("0.1.2.3", False),
        ("::", False),
        ("224.0.0.1", False),  # multicast
        ("ff02::1", False),
    ],
)
def test_allowed_networks_policy(address: str, allowed: bool) -> None:
    ip = parse_ip(address)
    assert ip is not None
    assert may_dial(ip, (*STORE, *FUTILE)) is allowed


def test_nat64_of_a_public_address_is_judged_as_before() -> None:
    ip = parse_ip("64:ff9b::808:808")  # NAT64 of 8.8.8.8
    assert ip is not None and may_dial(ip, STORE) is is_public(ip)
    assert may_dial(ip, (ipaddress.ip_network("64:ff9b::/96"),))  # an operator may list the NAT64 prefix itself


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.3.4.5", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # the same socket as 127.0.0.1
        ("64:ff9b::7f00:1", False),  # a NAT64 gateway's loopback is not this machine's
        ("2002:7f00:1::1", False),
        ("169.254.169.254", False),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),  # loopback only, not private ranges
    ],
)
def test_allow_loopback_opens_loopback_only(address: str, allowed: bool) -> None:
    ip = parse_ip(address)
    assert ip is not None and may_dial(ip, allow_loopback=True) is allowed


async def test_allowed_networks_reach_an_in_cluster_store() -> None:
    ok = lambda r: httpx.Response(200, content=b"ok")  # noqa: E731
    table = {"store.svc": ["10.42.0.9"], "other.svc": ["10.9.0.1"], "mixed.svc": ["10.42.0.9", "10.9.0.1"]}
    f = fetcher(ok, table=table, allowed_networks=STORE)
    assert await get(f, "http://store.svc/a") == b"ok"
    assert await get(f, "http://10.42.3.4/a") == b"ok"
    for url in ("http://other.svc/a", "http://mixed.svc/a", "http://127.0.0.1/a", "http://169.254.169.254/"):
        with pytest.raises(MediaBlockedError):
            await get(f, url)
    assert (
        await get(fetcher(ok, table={"mixed.svc": ["10.42.0.9", PUBLIC]}, allowed_networks=STORE), "http://mixed.svc/")
        == b"ok"
    )


async def test_allow_loopback_switch() -> None:
    ok = lambda r: httpx.Response(200, content=b"ok")  # noqa: E731
    table = {"localhost": ["::1", "127.0.0.1"], "store.svc": ["10.0.0.9"]}
    with pytest.raises(MediaBlockedError):
        await get(fetcher(ok, table=table), "http://localhost/a")
    f = fetcher(ok, table=table, allow_loopback=True)
    assert await get(f, "http://localhost/a") == b"ok"
    assert await get(f, "http://[::1]:8080/a") == b"ok"
    with pytest.raises(MediaBlockedError):
        await get(f, "http://store.svc/a")


@pytest.mark.parametrize("entry", ["10.42.0.0/16", "fd12:3456::/32", "0.0.0.0/0", "10.42.0.7/32"])
def test_allow_list_entries(entry: str) -> None:
    assert str(parse_allowed_network(entry)) == entry


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("10.42.0.1/16", "CIDR"),  # host bits set
        ("10.42.0.0/33", "CIDR"),
        ("store.svc", "CIDR"),
        ("", "CIDR"),
        ("127.0.0.0/8", "--media-allow-loopback"),
        ("::1/128", "--media-allow-loopback"),
        ("169.254.169.254/32", "metadata"),
        ("0.0.0.0/8", "unspecified"),
        ("fd00:ec2::254/128", "metadata"),
    ],
)
def test_allow_list_entries_refused(entry: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_allowed_network(entry)


@pytest.mark.parametrize("url", ["ftp://host/a.png", "gopher://x", "/relative/path.png", "javascript:alert(1)"])
async def test_other_schemes_refused(url: str) -> None:
    with pytest.raises(MediaBlockedError) as info:
        await get(fetcher(lambda r: httpx.Response(200, content=b"abc")), url)
    assert "not allowed" in info.value.message


async def test_file_urls_only_under_the_configured_root(tmp_path: Path) -> None:
    root = tmp_path / "media"
    root.mkdir()
    (root / "a.png").write_bytes(b"png!")
    (tmp_path / "secret.txt").write_bytes(b"secret")
    (root / "link").symlink_to(tmp_path / "secret.txt")
    never = lambda r: httpx.Response(500)  # noqa: E731
    with pytest.raises(MediaBlockedError):
        await get(fetcher(never), f"file://{root}/a.png")  # off by default
    f = fetcher(never, file_root=root)
    assert await get(f, f"file://{root}/a.png") == b"png!"
    for outside in (f"file://{tmp_path}/secret.txt", f"file://{root}/../secret.txt", f"file://{root}/link"):
        with pytest.raises(MediaBlockedError):
            await get(f, outside)


async def test_lists_match_idna_hosts() -> None:
    table = {"xn--bcher-kva.de": [PUBLIC]}
    ok = lambda r: httpx.Response(200, content=b"ok")  # noqa: E731
    with pytest.raises(MediaBlockedError):
        await get(fetcher(ok, table=table, denied_domains=("bücher.de",)), "http://BÜCHER.de./a")
    assert await get(fetcher(ok, table=table, allowed_domains=("bücher.de",)), "http://xn--bcher-kva.de/a") == b"ok"


async def test_fetch_concurrency_is_bounded_overall() -> None:
    in_flight = 0
    peak = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return httpx.Response(200, content=b"x")

    client = httpx.AsyncClient(transport=httpx.MockTransport(slow))
    f = Fetcher(FetchPolicy(resolver=resolver({"media.test": [PUBLIC]}), max_concurrency=3), client)
    await asyncio.gather(*(get(f, f"http://media.test/{i}") for i in range(10)))
    assert peak == 3
