"""The warning before an endpoint is disabled: a small worker sweeping failing endpoints.

An endpoint failing without a success for ``disable_after`` is disabled by the delivery worker
(and its partner mailed then, in the same transaction). A day ahead (``warn_ahead``), this
worker mails the partner once per failure streak (:func:`store.warn_failing_endpoints`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from maillage.common.db import CONNECTION_ERRORS, transaction
from maillage.common.logging import get_logger
from maillage.notifications import domain, store

log = get_logger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class DisableWarningWorker:
    """Every ``interval`` seconds, warn the partners of endpoints about to be disabled."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        disable_after: timedelta = domain.DEFAULT_DISABLE_AFTER,
        warn_ahead: timedelta = domain.DEFAULT_WARN_AHEAD,
        interval: float = 60.0,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.pool = pool
        self.disable_after = disable_after
        self.warn_ahead = warn_ahead
        self.interval = interval
        self.clock = clock
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        self._stopping.clear()
        while not self._stopping.is_set():
            try:
                await self.sweep()
            except CONNECTION_ERRORS as exc:
                log.warning("endpoint warning sweep failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)

    async def sweep(self) -> int:
        """One pass; how many endpoints were warned."""
        async with transaction(self.pool) as connection:
            warned = await store.warn_failing_endpoints(
                connection,
                now=self.clock(),
                disable_after=self.disable_after,
                warn_ahead=self.warn_ahead,
            )
        if warned:
            log.info("endpoint disable warnings queued", endpoints=warned)
        return warned
