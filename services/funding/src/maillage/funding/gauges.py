"""What operators watch of programme 147's money, read every minute (``metrics_gauge_seconds``).

One value per envelope (labels ``departement`` and ``year``: a few dozen series at most), in
integer euro cents as everywhere in funding (unit ``{cent}``; divide by 100 for euros). AE
(autorisations d'engagement) left is what conventions may still engage, CP (crédits de
paiement) left what tranches may still pay.
"""

from __future__ import annotations

import asyncpg

from maillage.common.metrics import Gauge, Reading


async def _per_envelope(connection: asyncpg.Connection, query: str) -> list[Reading]:
    return [
        (float(row["cents"]), {"departement": row["departement"], "year": str(row["year"])})
        for row in await connection.fetch(query)
    ]


async def ae_left(connection: asyncpg.Connection) -> list[Reading]:
    return await _per_envelope(
        connection, "SELECT departement, year, ae_cents - ae_engaged_cents AS cents FROM envelopes"
    )


async def cp_left(connection: asyncpg.Connection) -> list[Reading]:
    return await _per_envelope(
        connection, "SELECT departement, year, cp_cents - cp_paid_cents AS cents FROM envelopes"
    )


async def ae_delegated(connection: asyncpg.Connection) -> list[Reading]:
    return await _per_envelope(
        connection, "SELECT departement, year, ae_cents AS cents FROM envelopes"
    )


async def cp_delegated(connection: asyncpg.Connection) -> list[Reading]:
    return await _per_envelope(
        connection, "SELECT departement, year, cp_cents AS cents FROM envelopes"
    )


GAUGES = [
    Gauge(
        "maillage.funding.envelope.ae_left", "{cent}", "AE not engaged yet, per envelope", ae_left
    ),
    Gauge("maillage.funding.envelope.cp_left", "{cent}", "CP not paid yet, per envelope", cp_left),
    Gauge("maillage.funding.envelope.ae", "{cent}", "AE delegated, per envelope", ae_delegated),
    Gauge("maillage.funding.envelope.cp", "{cent}", "CP delegated, per envelope", cp_delegated),
]
