"""What operators watch of the stages de 3e, read every minute (``metrics_gauge_seconds``).

Read-only sums run by :class:`maillage.common.metrics.ServiceMetrics`; each value also carries
the ``service`` label. Only weeks still to come count (an ISO week from this Monday on), of
published offers: the seats a collège can still find.
"""

from __future__ import annotations

import asyncpg

from maillage.common.metrics import Gauge, Reading


async def seats(connection: asyncpg.Connection) -> list[Reading]:
    """Seats of the weeks to come: ``state`` free (not held) or held (accepted or confirmed)."""
    row = await connection.fetchrow(
        """
        SELECT coalesce(sum(w.seats - w.held), 0) AS free, coalesce(sum(w.held), 0) AS held
          FROM offer_weeks w JOIN stage_offers o ON o.id = w.offer_id
         WHERE o.status = 'published' AND w.monday >= date_trunc('week', now())::date
        """
    )
    return [(float(row["free"]), {"state": "free"}), (float(row["held"]), {"state": "held"})]


async def published_offers(connection: asyncpg.Connection) -> list[Reading]:
    n = await connection.fetchval("SELECT count(*) FROM stage_offers WHERE status = 'published'")
    return [(float(n), {})]


GAUGES = [
    Gauge(
        "maillage.stages3e.seats",
        "{seat}",
        "Seats of published offers in the weeks to come, free or held",
        seats,
    ),
    Gauge("maillage.stages3e.offers.published", "{offer}", "Published offers", published_offers),
]
