"""The SSRF policy of webhook URLs: pure checks, DNS faked by an injected resolver; the
connect-time check of the worker's network backend against a real TCP listener on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable

import httpcore
import pytest

from maillage.notifications.ssrf import (
    ADDRESS_NOT_ALLOWED,
    HOST_NOT_ALLOWED,
    HOST_UNRESOLVABLE,
    INVALID_URL,
    SCHEME_NOT_ALLOWED,
    USERINFO_NOT_ALLOWED,
    CheckedNetworkBackend,
    ParsedUrl,
    UnsafeUrl,
    address_problem,
    check_and_resolve,
    check_url,
    resolve_and_check,
    system_resolver,
)

NONE: frozenset[str] = frozenset()
LOOPBACK_ALLOWED = frozenset({"127.0.0.0/8", "::1", "localhost"})


def check(url: str, *, allow_http: bool = False, allowed: frozenset[str] = NONE) -> ParsedUrl:
    return check_url(url, allow_http=allow_http, allowed_hosts=allowed)


def refused(
    url: str, code: str, *, allow_http: bool = False, allowed: frozenset[str] = NONE
) -> str:
    with pytest.raises(UnsafeUrl) as info:
        check(url, allow_http=allow_http, allowed=allowed)
    assert info.value.code == code, info.value.message
    message: str = info.value.message
    assert str(info.value) == message
    return message


class FakeDns:
    """A resolver answering from a table, recording what it was asked."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> Iterable[str]:
        self.calls.append((host, port))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


# --- the cases the issue names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://10.0.0.1/hook", "10.0.0.1 est une adresse privée (10.0.0.0/8)"),
        ("https://127.0.0.1/hook", "127.0.0.1 est une adresse de bouclage, loopback"),
        (
            "https://169.254.169.254/latest/meta-data/",
            "169.254.169.254 est l'adresse d'un service de métadonnées cloud",
        ),
        ("https://[::1]/hook", "::1 est une adresse de bouclage, loopback"),
        (
            "https://[::ffff:10.0.0.1]/hook",
            "::ffff:10.0.0.1 est la forme IPv6 IPv4-mapped de 10.0.0.1, une adresse privée",
        ),
    ],
)
def test_the_issue_s_addresses_are_refused_with_a_clear_message(url: str, words: str) -> None:
    message = refused(url, ADDRESS_NOT_ALLOWED)
    assert words in message
    assert "un point de réception de webhooks est sur l'internet public" in message


def test_loopback_is_accepted_when_allow_listed() -> None:
    parsed = check("http://127.0.0.1:8081/hook", allow_http=True, allowed=LOOPBACK_ALLOWED)
    assert parsed.host == "127.0.0.1"
    assert parsed.port == 8081
    assert check("https://[::1]:9000/", allowed=LOOPBACK_ALLOWED).host_header == "[::1]:9000"
    # The allow-list exempts what it names, nothing else.
    refused("https://10.0.0.1/", ADDRESS_NOT_ALLOWED, allowed=LOOPBACK_ALLOWED)
    refused("https://169.254.169.254/", ADDRESS_NOT_ALLOWED, allowed=LOOPBACK_ALLOWED)


async def test_a_name_resolving_to_a_private_address_is_refused() -> None:
    dns = FakeDns({"hooks.partner.example": ["10.1.2.3"]})
    with pytest.raises(UnsafeUrl) as info:
        await check_and_resolve(
            "https://hooks.partner.example/in", allow_http=False, allowed_hosts=NONE, resolver=dns
        )
    assert info.value.code == ADDRESS_NOT_ALLOWED
    assert info.value.message.startswith(
        "hooks.partner.example se résout en 10.1.2.3, une adresse privée (10.0.0.0/8)"
    )
    assert dns.calls == [("hooks.partner.example", 443)]


async def test_one_unsafe_address_among_public_ones_refuses_the_host() -> None:
    answers = ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "169.254.169.254"]
    dns = FakeDns({"mixed.example": answers})
    with pytest.raises(
        UnsafeUrl, match=r"mixed\.example se résout en 169\.254\.169\.254, l\'adresse d\'un service"
    ):
        await resolve_and_check("mixed.example", 443, resolver=dns, allowed_hosts=NONE)


async def test_a_name_resolving_to_public_addresses_gives_them_all_in_order() -> None:
    dns = FakeDns({"hooks.example": ["93.184.215.14", "2606:4700::6810:85e5", "93.184.215.14"]})
    addresses = await resolve_and_check("hooks.example", 443, resolver=dns, allowed_hosts=NONE)
    assert addresses == ["93.184.215.14", "2606:4700::6810:85e5"]


async def test_allow_listed_names_and_networks_reach_loopback() -> None:
    dns = FakeDns({"localhost": ["127.0.0.1", "::1"], "receiver.test": ["127.0.0.2"]})
    assert await resolve_and_check(
        "localhost", 8080, resolver=dns, allowed_hosts=frozenset({"localhost"})
    ) == ["127.0.0.1", "::1"]
    # A name not listed is allowed when all its addresses are in listed networks.
    assert await resolve_and_check(
        "receiver.test", 80, resolver=dns, allowed_hosts=frozenset({"127.0.0.0/8"})
    ) == ["127.0.0.2"]
    with pytest.raises(UnsafeUrl, match="loopback"):
        await resolve_and_check("receiver.test", 80, resolver=dns, allowed_hosts=NONE)
    parsed, addresses = await check_and_resolve(
        "http://localhost:8080/hook", allow_http=True, allowed_hosts=LOOPBACK_ALLOWED, resolver=dns
    )
    assert parsed.url == "http://localhost:8080/hook"
    assert addresses == ["127.0.0.1", "::1"]


async def test_an_ip_literal_is_checked_without_resolving() -> None:
    dns = FakeDns({})
    assert await resolve_and_check("93.184.215.14", 443, resolver=dns, allowed_hosts=NONE) == [
        "93.184.215.14"
    ]
    with pytest.raises(UnsafeUrl, match="privée"):
        await resolve_and_check("192.168.1.1", 443, resolver=dns, allowed_hosts=NONE)
    assert dns.calls == []


async def test_an_unresolvable_host_is_refused() -> None:
    with pytest.raises(UnsafeUrl) as info:
        await resolve_and_check("nowhere.example", 443, resolver=FakeDns({}), allowed_hosts=NONE)
    assert info.value.code == HOST_UNRESOLVABLE
    with pytest.raises(UnsafeUrl) as info:
        await resolve_and_check(
            "empty.example", 443, resolver=FakeDns({"empty.example": []}), allowed_hosts=NONE
        )
    assert info.value.code == HOST_UNRESOLVABLE


async def test_the_system_resolver_returns_every_address() -> None:
    # Resolving a literal needs no network: it exercises loop.getaddrinfo for real.
    assert await system_resolver("127.0.0.1", 443) == ["127.0.0.1"]
    with pytest.raises(UnsafeUrl, match="loopback"):
        await resolve_and_check("127.0.0.1", 443, allowed_hosts=NONE)


# --- every class of address ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("10.255.255.255", "privée"),
        ("172.16.0.1", "adresse privée (172.16.0.0/12)"),
        ("172.31.255.254", "adresse privée (172.16.0.0/12)"),
        ("192.168.0.1", "adresse privée (192.168.0.0/16)"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("fec0::1", "site-local"),
        ("169.254.169.254", "métadonnées cloud"),
        ("fd00:ec2::254", "métadonnées cloud"),
        ("100.100.100.200", "métadonnées cloud"),
        ("0.0.0.0", "non spécifiée"),
        ("::", "non spécifiée"),
        ("0.1.2.3", "ce réseau"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("ff0e::1", "multicast"),
        ("240.0.0.1", "réservée"),
        ("255.255.255.255", "broadcast"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("192.0.0.8", "protocoles de l'IETF"),
        ("192.0.2.1", "documentation"),
        ("2001:db8::1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("2001::1", "Teredo"),
        ("100::1", "discard-only"),
        ("::ffff:127.0.0.1", "la forme IPv6 IPv4-mapped de 127.0.0.1, une adresse de bouclage"),
        (
            "::ffff:169.254.169.254",
            "la forme IPv6 IPv4-mapped de 169.254.169.254, l'adresse d'un service",
        ),
        (
            "::ffff:100.64.0.1",
            "la forme IPv6 IPv4-mapped de 100.64.0.1, une adresse partagée de carrier-grade NAT",
        ),
        ("64:ff9b::7f00:1", "la forme NAT64 (64:ff9b::/96) de 127.0.0.1, une adresse de bouclage"),
        (
            "64:ff9b::a9fe:a9fe",
            "la forme NAT64 (64:ff9b::/96) de 169.254.169.254, l'adresse d'un service",
        ),
        ("64:ff9b::a00:1", "la forme NAT64 (64:ff9b::/96) de 10.0.0.1, une adresse privée"),
        ("64:ff9b:1::a00:1", "NAT64 d'usage local"),
        ("2002:c0a8:101::1", "la forme 6to4 (2002::/16) de 192.168.1.1, une adresse privée"),
        ("::7f00:1", "IPv4-compatible"),
    ],
)
def test_every_non_public_address_class_is_refused(address: str, words: str) -> None:
    problem = address_problem(address)
    assert problem is not None
    assert words in problem
    literal = f"[{address}]" if ":" in address else address
    message = refused(f"https://{literal}/", ADDRESS_NOT_ALLOWED)
    assert words in message


@pytest.mark.parametrize(
    "address",
    [
        "93.184.215.14",
        "8.8.8.8",
        "1.1.1.1",
        "100.63.255.255",  # just below 100.64.0.0/10
        "100.128.0.1",  # just above
        "172.32.0.1",  # just above 172.16.0.0/12
        "2606:4700::6810:85e5",
        "2a00:1450:4007:80e::200e",
        "::ffff:8.8.8.8",  # mapped form of a public address
        "64:ff9b::808:808",  # DNS64 answer for a public IPv4-only endpoint
    ],
)
def test_public_addresses_are_accepted(address: str) -> None:
    assert address_problem(address) is None
    literal = f"[{address}]" if ":" in address else address
    assert check(f"https://{literal}/hook").ip is not None


# --- the URL itself ------------------------------------------------------------------------------


def test_http_is_refused_unless_allowed() -> None:
    message = refused("http://hooks.example.org/in", SCHEME_NOT_ALLOWED)
    assert "https://" in message
    assert check("http://hooks.example.org/in", allow_http=True).port == 80


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.org/",
        "file:///etc/passwd",
        "gopher://hooks.example.org:70/",
        "javascript:alert(1)",
        "ws://hooks.example.org/",
        "//hooks.example.org/in",
        "hooks.example.org/in",
    ],
)
def test_other_schemes_are_refused(url: str) -> None:
    refused(url, SCHEME_NOT_ALLOWED, allow_http=True)


@pytest.mark.parametrize(
    "url",
    [
        "https://user:secret@hooks.example.org/",
        "https://user@hooks.example.org/",
        "https://hooks.example.org@127.0.0.1/",
        "https://:@hooks.example.org/",
    ],
)
def test_userinfo_is_refused(url: str) -> None:
    message = refused(url, USERINFO_NOT_ALLOWED, allowed=LOOPBACK_ALLOWED)
    assert "ni nom d'utilisateur ni mot de passe" in message


@pytest.mark.parametrize(
    "url",
    [
        "https://127.1/",
        "https://2130706433/",
        "https://0x7f000001/",
        "https://0x7f.0.0.1/",
        "https://0177.0.0.1/",
        "https://010.0.0.1/",
    ],
)
def test_non_standard_ipv4_forms_are_refused(url: str) -> None:
    assert "non-standard form" in refused(url, INVALID_URL)


def test_unicode_digits_normalise_to_the_address_they_spell() -> None:
    assert "127.0.0.1 est une adresse de bouclage" in refused(
        "https://１２７.０.０.１/", ADDRESS_NOT_ALLOWED
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.org\t/",
        "https://hooks.exa\nmple.org/",
        "https://hooks.example.org /",
        "https://hooks.example.org\\@127.0.0.1/",
        "https:///in",
        "https://hooks.example.org:0/",
        "https://hooks.example.org:99999/",
        "https://hooks.example.org/in#frag",
        "https://[fe80::1%25eth0]/",
        "https://%31%32%37.0.0.1/",
        "https://hooks..example.org/",
        "https://-bad-.example.org/",
        "https://" + "a" * 2100 + ".example.org/",
    ],
)
def test_malformed_urls_are_refused(url: str) -> None:
    refused(url, INVALID_URL)


@pytest.mark.parametrize(
    "host",
    ["localhost", "api.localhost", "printer.local", "db.internal", "nas.home.arpa", "intranet"],
)
def test_local_only_names_are_refused_before_any_resolution(host: str) -> None:
    message = refused(f"https://{host}/in", HOST_NOT_ALLOWED)
    assert host in message
    # …unless the allow-list names them (tests, development).
    assert check(f"https://{host}/in", allowed=frozenset({host})).host == host


def test_a_url_is_normalised() -> None:
    parsed = check("https://Hooks.Example.ORG.:8443/in/bound?x=1&y=2")
    assert parsed == ParsedUrl("https", "hooks.example.org", 8443, "/in/bound?x=1&y=2", None)
    assert parsed.url == "https://hooks.example.org:8443/in/bound?x=1&y=2"
    assert parsed.host_header == "hooks.example.org:8443"
    assert check("https://hooks.example.org").target == "/"
    assert check("https://bücher.example/").host == "xn--bcher-kva.example"


# --- the connect-time check (the worker's network backend) ---------------------------------------


class Listener:
    """A TCP server on 127.0.0.1 that answers each line with its reverse and counts connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        line = await reader.readline()
        writer.write(line.rstrip(b"\n")[::-1] + b"\n")
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> Listener:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


async def exchange(stream: httpcore.AsyncNetworkStream, line: bytes) -> bytes:
    try:
        await stream.write(line + b"\n", timeout=5)
        return await stream.read(100, timeout=5)
    finally:
        await stream.aclose()


async def test_a_name_resolving_to_a_private_address_is_refused_at_connect_time() -> None:
    dns = FakeDns({"hooks.partner.example": ["127.0.0.1"]})
    backend = CheckedNetworkBackend(allowed_hosts=NONE, resolver=dns)
    async with Listener() as listener:
        with pytest.raises(UnsafeUrl) as info:
            await backend.connect_tcp("hooks.partner.example", listener.port, timeout=5)
    assert info.value.code == ADDRESS_NOT_ALLOWED
    assert info.value.message.startswith(
        "hooks.partner.example se résout en 127.0.0.1, une adresse de bouclage"
    )
    assert dns.calls == [("hooks.partner.example", listener.port)]
    assert listener.connections == 0  # refused before any packet left


async def test_an_allowed_name_connects_to_its_checked_address() -> None:
    dns = FakeDns({"receiver.test": ["127.0.0.1"]})
    backend = CheckedNetworkBackend(allowed_hosts=frozenset({"127.0.0.0/8"}), resolver=dns)
    async with Listener() as listener:
        stream = await backend.connect_tcp("receiver.test", listener.port, timeout=5)
        assert await exchange(stream, b"maillage") == b"egalliam\n"
    assert listener.connections == 1
    assert dns.calls == [("receiver.test", listener.port)]
    # An IP literal is checked without resolving; an allow-listed name skips the address rules.
    literal = CheckedNetworkBackend(allowed_hosts=frozenset({"127.0.0.1/32"}), resolver=dns)
    named = CheckedNetworkBackend(
        allowed_hosts=frozenset({"localhost"}), resolver=FakeDns({"localhost": ["127.0.0.1"]})
    )
    async with Listener() as listener:
        for backend, host in ((literal, "127.0.0.1"), (named, "localhost")):
            stream = await backend.connect_tcp(host, listener.port, timeout=5)
            assert await exchange(stream, b"ab") == b"ba\n"
    assert listener.connections == 2
    assert len(dns.calls) == 1  # the literal was not resolved


async def test_every_address_is_checked_before_any_connection() -> None:
    # One address among allowed ones is not: no connection at all, even to the allowed one.
    dns = FakeDns({"mixed.test": ["127.0.0.1", "10.0.0.7"]})
    backend = CheckedNetworkBackend(allowed_hosts=frozenset({"127.0.0.0/8"}), resolver=dns)
    async with Listener() as listener:
        with pytest.raises(
            UnsafeUrl, match=r"mixed\.test se résout en 10\.0\.0\.7, une adresse privée"
        ):
            await backend.connect_tcp("mixed.test", listener.port, timeout=5)
    assert listener.connections == 0


async def test_the_next_checked_address_is_tried_when_one_does_not_answer() -> None:
    # Nothing listens on 127.0.0.2 (the listener is bound to 127.0.0.1 only): refused, next one.
    dns = FakeDns({"receiver.test": ["127.0.0.2", "127.0.0.1"]})
    backend = CheckedNetworkBackend(allowed_hosts=frozenset({"127.0.0.0/8"}), resolver=dns)
    async with Listener() as listener:
        stream = await backend.connect_tcp("receiver.test", listener.port, timeout=5)
        assert await exchange(stream, b"xy") == b"yx\n"
        assert listener.connections == 1
        lonely = FakeDns({"receiver.test": ["127.0.0.2"]})
        alone = CheckedNetworkBackend(allowed_hosts=frozenset({"127.0.0.0/8"}), resolver=lonely)
        with pytest.raises(httpcore.ConnectError):
            await alone.connect_tcp("receiver.test", listener.port, timeout=5)


async def test_slow_resolution_counts_against_the_connect_timeout() -> None:
    async def slow(host: str, port: int) -> list[str]:
        await asyncio.sleep(10)
        return ["93.184.215.14"]

    backend = CheckedNetworkBackend(allowed_hosts=NONE, resolver=slow)
    with pytest.raises(httpcore.ConnectTimeout, match=r"slow\.example did not resolve within"):
        await backend.connect_tcp("slow.example", 443, timeout=0.05)


async def test_unix_sockets_are_refused() -> None:
    backend = CheckedNetworkBackend(allowed_hosts=frozenset({"127.0.0.0/8"}))
    with pytest.raises(UnsafeUrl) as info:
        await backend.connect_unix_socket("/run/docker.sock")
    assert info.value.code == INVALID_URL
