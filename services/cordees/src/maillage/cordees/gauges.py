"""What operators watch of the cordées programme, read every minute (``metrics_gauge_seconds``).

Read-only counts on indexed columns, run by :class:`maillage.common.metrics.ServiceMetrics` in
one read-only transaction; each value also carries the ``service`` label. The REP+ / REP
coverage on the programmes dashboard is ``pairings.active / (pairings.active +
requests.waiting)`` per ``priority`` (the national priority classes of ``domain.PriorityClass``).
"""

from __future__ import annotations

import asyncpg

from maillage.common.metrics import Gauge, Reading
from maillage.cordees.domain import PriorityClass


def _by_priority(rows: list[asyncpg.Record]) -> list[Reading]:
    """One reading per priority class, zero included (a series must not vanish at zero)."""
    counts = {row["priority"]: row["n"] for row in rows}
    return [(float(counts.get(p.value, 0)), {"priority": p.label}) for p in PriorityClass]


async def open_offers(connection: asyncpg.Connection) -> list[Reading]:
    n = await connection.fetchval("SELECT count(*) FROM cordee_offers WHERE status = 'open'")
    return [(float(n), {})]


async def open_places(connection: asyncpg.Connection) -> list[Reading]:
    """Capacity of the open offers minus their active pairings."""
    n = await connection.fetchval(
        """
        SELECT coalesce(sum(o.capacity - (SELECT count(*) FROM pairings p
                                           WHERE p.offer_id = o.id AND p.status = 'active')), 0)
          FROM cordee_offers o WHERE o.status = 'open'
        """
    )
    return [(float(n), {})]


async def waiting_requests(connection: asyncpg.Connection) -> list[Reading]:
    """Schools' requests not paired yet: requested, proposed (awaiting an answer) or unmatched."""
    rows = await connection.fetch(
        """
        SELECT priority, count(*) AS n FROM match_requests
         WHERE status IN ('requested', 'proposed', 'unmatched') GROUP BY priority
        """
    )
    return _by_priority(rows)


async def active_pairings(connection: asyncpg.Connection) -> list[Reading]:
    rows = await connection.fetch(
        """
        SELECT r.priority, count(*) AS n
          FROM pairings p JOIN match_requests r ON r.id = p.request_id
         WHERE p.status = 'active' GROUP BY r.priority
        """
    )
    return _by_priority(rows)


GAUGES = [
    Gauge("maillage.cordees.offers.open", "{offer}", "Open cordée offers", open_offers),
    Gauge(
        "maillage.cordees.places.open",
        "{place}",
        "Places left on open offers (capacity minus active pairings)",
        open_places,
    ),
    Gauge(
        "maillage.cordees.requests.waiting",
        "{request}",
        "Schools' requests not paired yet, by priority class",
        waiting_requests,
    ),
    Gauge(
        "maillage.cordees.pairings.active",
        "{pairing}",
        "Active pairings, by the priority class of the school",
        active_pairings,
    ),
]
