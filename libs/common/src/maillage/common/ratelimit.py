"""Rate limits: a token bucket per client, a growing delay after failures, 429 with Retry-After.

In process memory: each replica limits on its own, which bounds the total to ``replicas ×
rate``. That is the intended trade-off for the public endpoints it protects (registration, token
requests): no shared store on the hot path.

Who the client is (:func:`client_address`): the peer's address, or, when the peer is one of the
configured proxies (``<SERVICE>_TRUSTED_PROXIES``), the right-most address of
``X-Forwarded-For`` that is not itself a trusted proxy: a client cannot choose its own address by
sending the header. IPv6 addresses are grouped by /64, the block one subscriber usually holds, so
walking through one's own 2^64 addresses gains nothing.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from fastapi import Depends, Request

from maillage.common.problems import Problem

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TokenBucket:
    """``rate`` requests per ``per`` seconds with bursts of ``burst``, per key."""

    def __init__(
        self, rate: float, per: float, *, burst: int | None = None, max_keys: int = 100_000
    ) -> None:
        self.refill_per_second = rate / per
        self.capacity = float(burst if burst is not None else rate)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float | None = None) -> float:
        """Take one token; return 0 when allowed, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.refill_per_second)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (1 - tokens) / self.refill_per_second
        while len(self._buckets) > self.max_keys:  # forget the least recently seen clients
            self._buckets.popitem(last=False)
        return wait


RATE_LIMITED_RESPONSE: dict[str, Any] = {
    "description": "Too many requests from this address: retry after Retry-After seconds",
    "headers": {
        "Retry-After": {
            "required": True,
            "description": "Seconds to wait",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}
"""The ``responses=`` entry of a route that uses :func:`rate_limited`: ``{429: ...}``."""


class FailureThrottle:
    """A growing delay after repeated failures, per key (an account, an address group).

    The first ``free`` failures cost nothing; each one after them doubles the wait before the
    next attempt of that key, from ``base`` seconds up to ``ceiling``. A key forgets its failures
    ``forget_after`` seconds after its last one, or at :meth:`succeeded`. Attempts during the wait
    are refused without being tried, so a guesser spends no server work either.
    """

    def __init__(
        self,
        *,
        free: int,
        base: float = 1.0,
        ceiling: float = 900.0,
        forget_after: float = 900.0,
        max_keys: int = 100_000,
    ) -> None:
        self.free = free
        self.base = base
        self.ceiling = ceiling
        self.forget_after = forget_after
        self.max_keys = max_keys
        # key -> (failures, time of the last failure, earliest next attempt)
        self._failures: OrderedDict[str, tuple[int, float, float]] = OrderedDict()

    def wait(self, key: str, now: float | None = None) -> float:
        """Seconds before ``key`` may try again; 0 when it may now."""
        now = time.monotonic() if now is None else now
        entry = self._failures.get(key)
        if entry is None:
            return 0.0
        if now - entry[1] > self.forget_after:
            del self._failures[key]
            return 0.0
        return max(0.0, entry[2] - now)

    def failed(self, key: str, now: float | None = None) -> float:
        """Count one failure of ``key``; return the delay it now waits (0 while still free)."""
        now = time.monotonic() if now is None else now
        failures, last, _ = self._failures.pop(key, (0, now, now))
        if now - last > self.forget_after:
            failures = 0
        failures += 1
        over = failures - self.free
        delay = 0.0 if over <= 0 else min(self.ceiling, self.base * 2 ** min(over - 1, 32))
        self._failures[key] = (failures, now, now + delay)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)
        return delay

    def succeeded(self, key: str) -> None:
        """Forget every failure of ``key`` (an account that proved its secret)."""
        self._failures.pop(key, None)

    def forgive(self, key: str) -> None:
        """Take back one failure counted ahead (:meth:`failed` before trying, so that concurrent
        attempts cannot all slip through before the first one fails); the wait stays."""
        entry = self._failures.get(key)
        if entry is not None:
            self._failures[key] = (max(0, entry[0] - 1), entry[1], entry[2])


def address_group(address: str) -> str:
    """The key a client address is limited under: an IPv4 address, or an IPv6 /64 network
    (``2001:db8:1:2::/64``); an IPv4-mapped IPv6 address is its IPv4 address. Not an address
    (a test client's name): as it is."""
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def parse_proxies(
    entries: Iterable[str],
) -> tuple[Network, ...]:
    """``["10.0.0.0/8", "::1"]`` as networks (an address alone is a /32 or /128)."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


def _parsed(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address.strip().split("%", 1)[0])
    except ValueError:
        return None


def _trusted(address: str, proxies: Iterable[Network]) -> bool:
    parsed = _parsed(address)
    return parsed is not None and any(parsed in network for network in proxies)


def client_address(request: Request) -> str:
    """The address group the request comes from (see the module docstring)."""
    peer = request.client.host if request.client else "unknown"
    proxies = getattr(request.app.state, "trusted_proxies", ())
    if proxies and _trusted(peer, proxies):
        hops = [
            hop.strip()
            for header in request.headers.getlist("x-forwarded-for")
            for hop in header.split(",")
            if hop.strip()
        ]
        for hop in reversed(hops):  # the right-most hop was written by the nearest proxy
            if _parsed(hop) is None:  # not an address: keep the last proxy's word
                break
            peer = hop
            if not _trusted(hop, proxies):
                break
    return address_group(peer)


def rate_limited(name: str) -> Any:
    """A route dependency applying the app's bucket ``name`` (``app.state.rate_limits``) per
    client address; the composition root sizes the buckets from settings."""

    async def check(request: Request) -> None:
        bucket: TokenBucket = request.app.state.rate_limits[name]
        wait = bucket.take(client_address(request))
        if wait > 0:
            raise Problem(
                429,
                "rate_limited",
                "Trop de requêtes",
                detail="Trop de requêtes de ce type depuis cette adresse ; réessayez dans "
                f"{max(1, math.ceil(wait))} s.",
                bucket=name,
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )

    return Depends(check)
