"""What operators watch of notifications, read every minute (``metrics_gauge_seconds``).

Read-only counts run by :class:`maillage.common.metrics.ServiceMetrics`; the attempts themselves
are counted where they happen (``maillage.webhook.deliveries`` in ``delivery.py``,
``maillage.mail.attempts`` in ``mail.py``).
"""

from __future__ import annotations

import asyncpg

from maillage.common.metrics import Gauge, Reading


async def disabled_endpoints(connection: asyncpg.Connection) -> list[Reading]:
    n = await connection.fetchval(
        "SELECT count(*) FROM webhook_endpoints WHERE disabled_reason IS NOT NULL"
    )
    return [(float(n), {})]


async def pending_deliveries(connection: asyncpg.Connection) -> list[Reading]:
    n = await connection.fetchval("SELECT count(*) FROM deliveries WHERE status = 'pending'")
    return [(float(n), {})]


async def pending_mail(connection: asyncpg.Connection) -> list[Reading]:
    n = await connection.fetchval("SELECT count(*) FROM outgoing_mail WHERE status = 'pending'")
    return [(float(n), {})]


GAUGES = [
    Gauge(
        "maillage.webhook.endpoints.disabled",
        "{endpoint}",
        "Webhook endpoints disabled (410 Gone, failing for too long, or by their partner)",
        disabled_endpoints,
    ),
    Gauge(
        "maillage.webhook.deliveries.pending",
        "{delivery}",
        "Webhook deliveries waiting for their next attempt",
        pending_deliveries,
    ),
    Gauge(
        "maillage.mail.pending", "{mail}", "E-mails not sent yet (retrying included)", pending_mail
    ),
]
