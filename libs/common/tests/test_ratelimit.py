"""Who a client is, and how failures slow it down (pure: no server, no clock)."""

from __future__ import annotations

import ipaddress

from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from maillage.common.ratelimit import (
    FailureThrottle,
    address_group,
    client_address,
    parse_proxies,
)


def _request(
    peer: str, *, proxies: list[str], forwarded: tuple[str, ...] | list[str] = ()
) -> Request:
    app = FastAPI()
    app.state.trusted_proxies = parse_proxies(proxies)
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return Request(
        {"type": "http", "app": app, "client": (peer, 40000), "headers": headers, "method": "GET"}
    )


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=2**64 - 1), st.integers(0, 2**64 - 1))
def test_every_address_of_one_ipv6_64_is_one_client(prefix: int, interface: int) -> None:
    address = ipaddress.IPv6Address((prefix << 64) | interface)
    base = ipaddress.IPv6Address(prefix << 64)
    if address.ipv4_mapped is None and base.ipv4_mapped is None:
        assert address_group(str(address)) == address_group(str(base))
        assert address_group(str(address)).endswith("/64")


def test_ipv4_addresses_stay_apart_and_mapped_ones_are_ipv4() -> None:
    assert address_group("127.0.0.2") != address_group("127.0.0.3")
    assert address_group("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_group("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert address_group("testclient") == "testclient"


def test_forwarded_addresses_count_only_from_a_configured_proxy() -> None:
    # No proxy configured: the header is the client's own word and changes nothing.
    assert client_address(_request("203.0.113.9", proxies=[], forwarded=["198.51.100.1"])) == (
        "203.0.113.9"
    )
    # From an untrusted peer: ignored too.
    untrusted = _request("203.0.113.9", proxies=["10.0.0.0/8"], forwarded=["198.51.100.1"])
    assert client_address(untrusted) == "203.0.113.9"
    # From the proxy: the right-most hop that is not a proxy; what the client wrote before it
    # (the left-most, spoofable entries) is not believed.
    chain = ["1.2.3.4, 198.51.100.1", "10.0.0.5"]
    assert client_address(_request("10.0.0.2", proxies=["10.0.0.0/8"], forwarded=chain)) == (
        "198.51.100.1"
    )
    # A hop that is not an address: the proxy's own address stands.
    junk = _request("10.0.0.2", proxies=["10.0.0.0/8"], forwarded=["not-an-address"])
    assert client_address(junk) == "10.0.0.2"
    ipv6 = _request("::1", proxies=["::1"], forwarded=["2001:db8:5:6::42"])
    assert client_address(ipv6) == "2001:db8:5:6::/64"


def test_failures_beyond_the_free_ones_double_the_wait_up_to_the_ceiling() -> None:
    throttle = FailureThrottle(free=3, base=1, ceiling=8, forget_after=100)
    assert [throttle.failed("a", now=0) for _ in range(3)] == [0, 0, 0]
    assert throttle.wait("a", now=0) == 0
    assert [throttle.failed("a", now=0) for _ in range(5)] == [1, 2, 4, 8, 8]
    assert throttle.wait("a", now=3) == 5
    assert throttle.wait("b", now=3) == 0  # another account or address is not slowed
    throttle.succeeded("a")
    assert throttle.wait("a", now=3) == 0


def test_failures_are_forgotten_after_a_quiet_while() -> None:
    throttle = FailureThrottle(free=1, base=1, ceiling=60, forget_after=10)
    throttle.failed("a", now=0)
    assert throttle.failed("a", now=1) == 1
    assert throttle.wait("a", now=20) == 0
    assert throttle.failed("a", now=20) == 0  # counted from scratch


@settings(max_examples=100)
@given(st.lists(st.floats(min_value=0, max_value=1e6), max_size=50), st.integers(1, 10))
def test_the_wait_never_exceeds_the_ceiling(moments: list[float], free: int) -> None:
    throttle = FailureThrottle(free=free, base=0.5, ceiling=900, forget_after=900, max_keys=3)
    for moment in sorted(moments):
        assert 0 <= throttle.failed("k", now=moment) <= 900
        assert throttle.wait("k", now=moment) <= 900


def test_a_failure_counted_ahead_can_be_forgiven_without_lifting_the_wait() -> None:
    throttle = FailureThrottle(free=1, base=10, ceiling=60, forget_after=100)
    throttle.failed("a", now=0)
    throttle.forgive("a")
    assert throttle.failed("a", now=1) == 0  # the first failure was taken back
    assert throttle.failed("a", now=2) == 10
    throttle.forgive("a")
    assert throttle.wait("a", now=3) == 9
