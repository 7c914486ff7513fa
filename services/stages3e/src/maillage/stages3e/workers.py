"""The stages3e background worker: on time, without anyone asking.

Every ``interval`` seconds (and at start-up), one transaction per task:

1. expire applications past their timer (15 days without the host's answer, 7 days without the
   school's confirmation), freeing their seats (``usecases.expire_due``);
2. close offers whose last week has begun or whose weeks to come are full
   (``usecases.close_finished_offers``);
3. erase the pupils' references of finished school years once their erasure day has come
   (``usecases.erase_finished_school_years``, 31 July by default).

A failed pass is logged and tried again next time; several replicas may run it (expiry and
closing lock the rows they change, closing skips those another pass holds).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg

from maillage.common.db import CONNECTION_ERRORS, transaction
from maillage.common.logging import get_logger
from maillage.stages3e import usecases

log = get_logger(__name__)


class StagesClock:
    """Runs the timed rules of the stages de 3e (see the module docstring)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        interval: float = 60.0,
        erasure_month: int = 7,
        erasure_day: int = 31,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.pool = pool
        self.interval = interval
        self.erasure_month = erasure_month
        self.erasure_day = erasure_day
        self.clock = clock
        self._stopping = asyncio.Event()

    async def run_once(self) -> dict[str, int]:
        """One pass; returns what it did."""
        now = self.clock()
        async with transaction(self.pool) as connection:
            expired = await usecases.expire_due(connection, now)
        async with transaction(self.pool) as connection:
            closed = await usecases.close_finished_offers(connection, now.date())
        async with transaction(self.pool) as connection:
            erased = await usecases.erase_finished_school_years(
                connection, now, self.erasure_month, self.erasure_day
            )
        done = {"expired": expired, "closed": closed, "erased": erased}
        if any(done.values()):
            log.info("timed rules applied", **done)
        return done

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except CONNECTION_ERRORS as error:
                log.warning("timed rules failed", error=str(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)

    def stop(self) -> None:
        self._stopping.set()
