"""Rate limits: a token bucket per client, answering 429 with ``Retry-After``.

In process memory: each replica limits on its own, which bounds the total to ``replicas ×
rate``. That is the intended trade-off for the public endpoints it protects (registration, token
requests): no shared store on the hot path.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Any

from fastapi import Depends, Request

from maillage.common.problems import Problem


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


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


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
