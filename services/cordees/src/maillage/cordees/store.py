"""SQL of the cordees service: asyncpg queries on its own database only.

Lock order, everywhere (decision 48):

1. the matching lock of the school year (``lock_matching``, a transaction-level advisory lock;
   several years in ascending order): every use case that may change a proposal takes it
   first (a request filed, an acceptance, a decline, a withdrawal, an expiry, an offer opened,
   changed or closed, a pairing ended, a partner's status, a campaign), so the live flow's
   re-solve of a year runs alone;
2. an offer's row (``get_offer(for_update=True)``): the capacity an acceptance or a change
   checks;
3. a request's row (``get_request(for_update=True)``), then a pairing's.

Nothing takes a lock of an earlier step while holding one of a later step, so two use cases
never wait on each other in a cycle. The prices of a year's offers (``offer_prices``, decision 55)
are read and written only under the year's matching lock: they need no lock of their own. The
year's row of ``matching_versions`` (decision 56) is written right after that lock, by its holder
(and before any pairing's row by the end of a school year).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

Connection = asyncpg.Connection | asyncpg.Pool

# --- the read model of partners -----------------------------------------------------------------

PARTNER_COLUMNS = (
    "partner_id, kind, legal_name, status, uai, departement, academie, latitude, longitude,"
    " education_prioritaire, qpv_proximity, version"
)


async def apply_partner(connection: Connection, facts: dict[str, Any]) -> bool:
    """Keep the partner's facts unless a newer version is already there. True when applied."""
    applied = await connection.fetchval(
        """
        INSERT INTO partners (partner_id, kind, legal_name, status, uai, departement, academie,
                              latitude, longitude, education_prioritaire, qpv_proximity, version)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
        ON CONFLICT (partner_id) DO UPDATE SET
            kind = EXCLUDED.kind, legal_name = EXCLUDED.legal_name, status = EXCLUDED.status,
            uai = EXCLUDED.uai, departement = EXCLUDED.departement, academie = EXCLUDED.academie,
            latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude,
            education_prioritaire = EXCLUDED.education_prioritaire,
            qpv_proximity = EXCLUDED.qpv_proximity, version = EXCLUDED.version,
            updated_at = now()
        WHERE partners.version < EXCLUDED.version
        RETURNING true
        """,
        facts["partner_id"],
        facts["kind"],
        facts["legal_name"],
        facts["status"],
        facts.get("uai"),
        facts.get("departement"),
        facts.get("academie"),
        facts.get("latitude"),
        facts.get("longitude"),
        facts.get("education_prioritaire"),
        facts.get("qpv_proximity"),
        facts["version"],
    )
    return bool(applied)


async def get_partner(connection: Connection, partner_id: uuid.UUID | str) -> dict[str, Any] | None:
    row = await connection.fetchrow(
        f"SELECT {PARTNER_COLUMNS} FROM partners WHERE partner_id = $1",  # noqa: S608
        _uuid(partner_id),
    )
    return dict(row) if row else None


# --- cordée offers ------------------------------------------------------------------------------

OFFER_COLUMNS = (
    "o.id, o.tete_partner_id, o.school_year, o.capacity, o.status, o.levels, o.thematics,"
    " o.max_distance_km, o.academies, o.version, o.created_at, o.updated_at, o.closed_at,"
    " (SELECT count(*) FROM pairings p WHERE p.offer_id = o.id AND p.status = 'active')::int"
    " AS encordes"
)


async def insert_offer(connection: Connection, offer: dict[str, Any]) -> dict[str, Any]:
    await connection.execute(
        """
        INSERT INTO cordee_offers (id, tete_partner_id, school_year, capacity, levels, thematics,
                                   max_distance_km, academies)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        """,
        offer["id"],
        offer["tete_partner_id"],
        offer["school_year"],
        offer["capacity"],
        offer["levels"],
        offer["thematics"],
        offer["max_distance_km"],
        offer["academies"],
    )
    created = await get_offer(connection, offer["id"])
    assert created is not None
    return created


async def get_offer(
    connection: Connection, offer_id: uuid.UUID | str, *, for_update: bool = False
) -> dict[str, Any] | None:
    if for_update:  # the lock first (an aggregate cannot be locked), then the figures
        await connection.execute(
            "SELECT 1 FROM cordee_offers WHERE id = $1 FOR UPDATE", _uuid(offer_id)
        )
    row = await connection.fetchrow(
        f"SELECT {OFFER_COLUMNS} FROM cordee_offers o WHERE o.id = $1",  # noqa: S608
        _uuid(offer_id),
    )
    return dict(row) if row else None


async def update_offer(
    connection: Connection,
    offer_id: uuid.UUID,
    *,
    capacity: int,
    levels: Sequence[str],
    thematics: Sequence[str],
    max_distance_km: float | None,
    academies: Sequence[str],
) -> dict[str, Any]:
    """Write an offer's changeable fields, bump its version; the offer."""
    await connection.execute(
        """
        UPDATE cordee_offers SET capacity = $2, levels = $3, thematics = $4,
            max_distance_km = $5, academies = $6, version = version + 1, updated_at = now()
        WHERE id = $1
        """,
        offer_id,
        capacity,
        list(levels),
        list(thematics),
        max_distance_km,
        list(academies),
    )
    updated = await get_offer(connection, offer_id)
    assert updated is not None
    return updated


async def close_offer(connection: Connection, offer_id: uuid.UUID) -> dict[str, Any]:
    await connection.execute(
        "UPDATE cordee_offers SET status = 'closed', closed_at = now(), version = version + 1,"
        " updated_at = now() WHERE id = $1",
        offer_id,
    )
    closed = await get_offer(connection, offer_id)
    assert closed is not None
    return closed


async def list_offers(
    connection: Connection,
    *,
    tete_partner_id: uuid.UUID | None,
    school_year: str | None,
    status: str | None,
    thematic: str | None,
    level: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        f"""
        SELECT {OFFER_COLUMNS} FROM cordee_offers o
        WHERE ($1::uuid IS NULL OR o.tete_partner_id = $1)
          AND ($2::text IS NULL OR o.school_year = $2)
          AND ($3::text IS NULL OR o.status = $3)
          AND ($4::text IS NULL OR $4 = ANY (o.thematics))
          AND ($5::text IS NULL OR $5 = ANY (o.levels))
          AND ($6::timestamptz IS NULL OR (o.created_at, o.id) > ($6, $7::uuid))
        ORDER BY o.created_at, o.id
        LIMIT $8
        """,  # noqa: S608
        tete_partner_id,
        school_year,
        status,
        thematic,
        level,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [dict(row) for row in rows]


async def open_offers(
    connection: Connection, school_year: str, *, offer_id: uuid.UUID | None = None
) -> list[asyncpg.Record]:
    """Open offers of verified têtes de cordée for the year (or just ``offer_id``), with their
    remaining capacity and the tête's coordinates and académie; full offers are left out."""
    rows = await connection.fetch(
        """
        SELECT o.id, o.tete_partner_id, o.school_year, o.capacity, o.levels, o.thematics,
               o.max_distance_km, o.academies, t.latitude, t.longitude, t.academie,
               o.capacity - (SELECT count(*) FROM pairings p
                             WHERE p.offer_id = o.id AND p.status = 'active')::int AS remaining
        FROM cordee_offers o JOIN partners t ON t.partner_id = o.tete_partner_id
        WHERE o.status = 'open' AND o.school_year = $1 AND t.status = 'verified'
          AND t.latitude IS NOT NULL AND t.longitude IS NOT NULL
          AND ($2::uuid IS NULL OR o.id = $2)
        """,
        school_year,
        offer_id,
    )
    return [row for row in rows if row["remaining"] > 0]  # records: 1,500 dicts cost more


async def reachable_offers(
    connection: Connection,
    school_year: str,
    *,
    school_partner_id: uuid.UUID,
    levels: Sequence[str],
    latitude: float,
    academie: str | None,
    max_band_degrees: float | None,
    km_per_degree: float,
) -> list[dict[str, Any]]:
    """The open offers of the year with places left that one school may reach, as
    :func:`open_offers` gives them: not its own, teaching one of its ``levels``, and whose tête
    lies in a latitude band as wide as the farthest distance allowed (``max_band_degrees`` from
    the school's wish, the offer's own maximum distance), or that serve its académie, or that
    have no territory rule. A great-circle distance is never shorter than the difference of
    latitudes, so no offer the matcher would keep is left out; the band's margin (1e-6 degree)
    covers rounding."""
    rows = await connection.fetch(
        """
        SELECT o.id, o.tete_partner_id, o.school_year, o.capacity, o.levels, o.thematics,
               o.max_distance_km, o.academies, t.latitude, t.longitude, t.academie,
               o.capacity - taken.active AS remaining
        FROM cordee_offers o
        JOIN partners t ON t.partner_id = o.tete_partner_id
        CROSS JOIN LATERAL (SELECT count(*)::int AS active FROM pairings p
                            WHERE p.offer_id = o.id AND p.status = 'active') AS taken
        WHERE o.status = 'open' AND o.school_year = $1 AND t.status = 'verified'
          AND t.latitude IS NOT NULL AND t.longitude IS NOT NULL
          AND o.capacity > taken.active
          AND o.tete_partner_id <> $2 AND o.levels && $3::text[]
          AND ($5::float8 IS NULL OR abs(t.latitude - $4) <= $5 + 1e-6)
          AND ((o.max_distance_km IS NULL AND o.academies = '{}')
               OR abs(t.latitude - $4) <= o.max_distance_km / $7 + 1e-6
               OR $6 = ANY (o.academies))
        """,
        school_year,
        school_partner_id,
        list(levels),
        latitude,
        max_band_degrees,
        academie,
        km_per_degree,
    )
    return [dict(row) for row in rows]


# --- match requests -----------------------------------------------------------------------------

REQUEST_COLUMNS = (
    "id, school_partner_id, school_year, thematics, max_distance_km, priority, status,"
    " offer_id, proposal, proposals, declined_offer_ids, proposed_at, proposed_tete_ids,"
    " created_at, updated_at"
)

# First key of the matching lock (the two-key advisory locks are a key space of their own,
# apart from the outbox's one-key locks): "cord" in ASCII.
MATCHING_LOCK_KEY = 0x636F7264


async def lock_matching(connection: Connection, school_years: Sequence[str]) -> None:
    """Take the matching lock of each school year, in ascending order, until the transaction
    ends (step 1 of the lock order)."""
    for school_year in sorted(set(school_years)):
        await connection.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))", MATCHING_LOCK_KEY, school_year
        )
    await raise_matching_versions(connection, school_years)


async def raise_matching_versions(connection: Connection, school_years: Sequence[str]) -> None:
    """Write a fresh stamp for each year's matching state (decision 56): every holder of the
    matching lock does, as it takes it, and whatever changes a year's offers, pairings or
    prices without that lock (the end of a school year)."""
    if school_years:
        await connection.execute(
            """
            INSERT INTO matching_versions (school_year)
            SELECT unnest($1::text[]) ORDER BY 1
            ON CONFLICT (school_year)
                DO UPDATE SET previous = matching_versions.stamp, stamp = gen_random_uuid()
            """,
            sorted(set(school_years)),
        )


async def matching_version(
    connection: Connection, school_year: str
) -> tuple[uuid.UUID | None, uuid.UUID]:
    """(the stamp replaced, the stamp written) of the year's matching state, as this transaction
    raised it. The caller holds the year's matching lock."""
    row = await connection.fetchrow(
        "SELECT previous, stamp FROM matching_versions WHERE school_year = $1", school_year
    )
    assert row is not None
    return row["previous"], row["stamp"]


async def insert_request(connection: Connection, request: dict[str, Any]) -> dict[str, Any]:
    row = await connection.fetchrow(
        f"""
        INSERT INTO match_requests (id, school_partner_id, school_year, thematics,
                                    max_distance_km, priority, status)
        VALUES ($1, $2, $3, $4, $5, $6, 'requested')
        RETURNING {REQUEST_COLUMNS}
        """,  # noqa: S608
        request["id"],
        request["school_partner_id"],
        request["school_year"],
        request["thematics"],
        request["max_distance_km"],
        request["priority"],
    )
    return dict(row)


async def get_request(
    connection: Connection, request_id: uuid.UUID | str, *, for_update: bool = False
) -> dict[str, Any] | None:
    row = await connection.fetchrow(
        f"SELECT {REQUEST_COLUMNS} FROM match_requests WHERE id = $1"  # noqa: S608
        + (" FOR UPDATE" if for_update else ""),
        _uuid(request_id),
    )
    return dict(row) if row else None


async def set_request_state(
    connection: Connection,
    request_id: uuid.UUID,
    *,
    status: str,
    offer_id: uuid.UUID | None = None,
    proposal: dict[str, Any] | None = None,
    proposed: bool = False,
    declined_offer_id: uuid.UUID | None = None,
    proposed_at: datetime | None = None,
    tete_partner_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """Move a request: `proposed` counts one more proposal, made at ``proposed_at`` to
    ``tete_partner_id`` (remembered among the têtes it was proposed to); a declined offer is
    remembered."""
    row = await connection.fetchrow(
        f"""
        UPDATE match_requests SET
            status = $2, offer_id = $3, proposal = $4,
            proposals = proposals + CASE WHEN $5 THEN 1 ELSE 0 END,
            declined_offer_ids = CASE WHEN $6::uuid IS NULL THEN declined_offer_ids
                                      ELSE array_append(declined_offer_ids, $6::uuid) END,
            proposed_at = CASE WHEN $2 = 'proposed' THEN coalesce($7, proposed_at) END,
            proposed_tete_ids = CASE
                WHEN $8::uuid IS NULL OR $8::uuid = ANY (proposed_tete_ids) THEN proposed_tete_ids
                ELSE array_append(proposed_tete_ids, $8::uuid) END,
            updated_at = now()
        WHERE id = $1
        RETURNING {REQUEST_COLUMNS}
        """,  # noqa: S608
        request_id,
        status,
        offer_id,
        proposal,
        proposed,
        declined_offer_id,
        proposed_at,
        tete_partner_id,
    )
    return dict(row)


@dataclass(frozen=True, slots=True)
class RequestState:
    """What :func:`set_request_states` writes to one request: ``proposed`` to ``offer_id``
    with its ``proposal`` (one more proposal, made at ``proposed_at`` to ``tete_partner_id``),
    or ``unmatched``."""

    request_id: uuid.UUID
    status: str  # "proposed" | "unmatched"
    offer_id: uuid.UUID | None = None
    proposal: dict[str, Any] | None = None
    proposed_at: datetime | None = None
    tete_partner_id: uuid.UUID | None = None


async def set_request_states(connection: Connection, states: Sequence[RequestState]) -> None:
    """Move several requests in one statement, each as :func:`set_request_state` would (the
    live flow's moves). The caller holds the year's matching lock."""
    if not states:
        return
    await connection.execute(
        """
        UPDATE match_requests r SET
            status = s.status, offer_id = s.offer_id, proposal = s.proposal::jsonb,
            proposals = r.proposals + CASE WHEN s.status = 'proposed' THEN 1 ELSE 0 END,
            proposed_at = CASE WHEN s.status = 'proposed'
                               THEN coalesce(s.proposed_at, r.proposed_at) END,
            proposed_tete_ids = CASE
                WHEN s.tete IS NULL OR s.tete = ANY (r.proposed_tete_ids) THEN r.proposed_tete_ids
                ELSE array_append(r.proposed_tete_ids, s.tete) END,
            updated_at = now()
        FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::timestamptz[],
                    $6::uuid[]) AS s(id, status, offer_id, proposal, proposed_at, tete)
        WHERE r.id = s.id
        """,
        [state.request_id for state in states],
        [state.status for state in states],
        [state.offer_id for state in states],
        [None if state.proposal is None else json.dumps(state.proposal) for state in states],
        [state.proposed_at for state in states],
        [state.tete_partner_id for state in states],
    )


_SCHOOL_FACTS = """
               s.uai AS school_uai, s.kind AS school_kind, s.departement AS school_departement,
               s.academie AS school_academie, s.latitude AS school_latitude,
               s.longitude AS school_longitude, s.status AS school_status,
               s.education_prioritaire AS school_education_prioritaire,
               s.qpv_proximity AS school_qpv_proximity"""


# What a re-solve reads of each request: not its proposal (a JSON document with the
# alternatives, whose decoding for every request of the year was most of a re-solve's time).
_LIVE_COLUMNS = ", ".join(
    f"r.{c.strip()}" for c in REQUEST_COLUMNS.split(",") if c.strip() != "proposal"
)


async def live_requests(connection: Connection, school_year: str) -> list[asyncpg.Record]:
    """Every request of the year still in the live flow (requested, proposed or unmatched),
    with its school's facts (`school_*` columns, null when the school is unknown), oldest
    first, without its ``proposal``. The caller holds the year's matching lock."""
    rows = await connection.fetch(
        f"""
        SELECT {_LIVE_COLUMNS}, {_SCHOOL_FACTS}
        FROM match_requests r LEFT JOIN partners s ON s.partner_id = r.school_partner_id
        WHERE r.school_year = $1 AND r.status IN ('requested', 'proposed', 'unmatched')
        ORDER BY r.created_at, r.id
        """,  # noqa: S608
        school_year,
    )
    return list(rows)  # records, read by key: a thousand dicts cost more than the solve


async def waiting_to_be_answered(connection: Connection, school_year: str) -> list[asyncpg.Record]:
    """The requests of the year filed and not answered yet (``requested``: in this transaction
    only), as ``live_requests`` gives them. The caller holds the year's matching lock."""
    rows = await connection.fetch(
        f"""
        SELECT {_LIVE_COLUMNS}, {_SCHOOL_FACTS}
        FROM match_requests r LEFT JOIN partners s ON s.partner_id = r.school_partner_id
        WHERE r.school_year = $1 AND r.status = 'requested'
        ORDER BY r.created_at, r.id
        """,  # noqa: S608
        school_year,
    )
    return list(rows)


async def proposed_to(
    connection: Connection, school_year: str, offer_ids: Sequence[uuid.UUID]
) -> list[asyncpg.Record]:
    """The requests of the year proposed to one of ``offer_ids`` now, as ``live_requests``
    gives them. The caller holds the year's matching lock."""
    rows = await connection.fetch(
        f"""
        SELECT {_LIVE_COLUMNS}, {_SCHOOL_FACTS}
        FROM match_requests r LEFT JOIN partners s ON s.partner_id = r.school_partner_id
        WHERE r.school_year = $1 AND r.status = 'proposed' AND r.offer_id = ANY($2::uuid[])
        ORDER BY r.created_at, r.id
        """,  # noqa: S608
        school_year,
        list(offer_ids),
    )
    return list(rows)


async def active_pairs(
    connection: Connection, school_year: str
) -> set[tuple[uuid.UUID, uuid.UUID]]:
    """(school, offer) of every active pairing of the year: a school is never proposed an
    offer it is encordé with."""
    rows = await connection.fetch(
        "SELECT school_partner_id, offer_id FROM pairings"
        " WHERE school_year = $1 AND status = 'active'",
        school_year,
    )
    return {(row["school_partner_id"], row["offer_id"]) for row in rows}


async def other_request_proposed_to(
    connection: Connection,
    school_partner_id: uuid.UUID,
    offer_id: uuid.UUID,
    request_id: uuid.UUID,
) -> bool:
    """Whether another request of the school is proposed this offer now."""
    return bool(
        await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM match_requests WHERE school_partner_id = $1"
            " AND offer_id = $2 AND status = 'proposed' AND id <> $3)",
            school_partner_id,
            offer_id,
            request_id,
        )
    )


# --- prices of the live flow's optimum (decision 55) ---------------------------------------------


async def offer_prices(connection: Connection, school_year: str) -> dict[uuid.UUID, int]:
    """The price kept for each offer of the year. The caller holds the year's matching lock."""
    rows = await connection.fetch(
        "SELECT offer_id, price FROM offer_prices WHERE school_year = $1", school_year
    )
    return {row["offer_id"]: row["price"] for row in rows}


async def replace_offer_prices(
    connection: Connection, school_year: str, prices: dict[uuid.UUID, int]
) -> None:
    """Forget the year's prices and keep ``prices`` instead (none: the next request filed
    re-solves the year). The caller holds the year's matching lock."""
    await connection.execute("DELETE FROM offer_prices WHERE school_year = $1", school_year)
    await set_offer_prices(connection, school_year, prices)


async def set_offer_prices(
    connection: Connection, school_year: str, prices: dict[uuid.UUID, int]
) -> None:
    """Keep these offers' prices for the year. The caller holds the year's matching lock."""
    if not prices:
        return
    await connection.execute(
        """
        INSERT INTO offer_prices (offer_id, school_year, price)
        SELECT offer_id, $1, price FROM unnest($2::uuid[], $3::bigint[]) AS p(offer_id, price)
        ON CONFLICT (offer_id) DO UPDATE
            SET school_year = EXCLUDED.school_year, price = EXCLUDED.price
        """,
        school_year,
        list(prices),
        list(prices.values()),
    )


async def years_with_expired_proposals(connection: Connection, before: datetime) -> list[str]:
    """The school years that have a proposal made before ``before`` still unanswered."""
    rows = await connection.fetch(
        "SELECT DISTINCT school_year FROM match_requests"
        " WHERE status = 'proposed' AND proposed_at < $1 ORDER BY school_year",
        before,
    )
    return [row["school_year"] for row in rows]


async def expired_proposals(
    connection: Connection, school_year: str, before: datetime
) -> list[dict[str, Any]]:
    """The requests of the year proposed before ``before`` and still unanswered, locked."""
    rows = await connection.fetch(
        f"SELECT {REQUEST_COLUMNS} FROM match_requests"  # noqa: S608
        " WHERE school_year = $1 AND status = 'proposed' AND proposed_at < $2"
        " ORDER BY proposed_at, id FOR UPDATE",
        school_year,
        before,
    )
    return [dict(row) for row in rows]


async def years_of_tete(connection: Connection, tete_partner_id: uuid.UUID) -> list[str]:
    """The school years of the tête's open offers."""
    rows = await connection.fetch(
        "SELECT DISTINCT school_year FROM cordee_offers"
        " WHERE tete_partner_id = $1 AND status = 'open' ORDER BY school_year",
        tete_partner_id,
    )
    return [row["school_year"] for row in rows]


async def years_of_school(connection: Connection, school_partner_id: uuid.UUID) -> list[str]:
    """The school years of the school's requests still in the live flow."""
    rows = await connection.fetch(
        "SELECT DISTINCT school_year FROM match_requests WHERE school_partner_id = $1"
        " AND status IN ('requested', 'proposed', 'unmatched') ORDER BY school_year",
        school_partner_id,
    )
    return [row["school_year"] for row in rows]


async def list_requests(
    connection: Connection,
    *,
    partner_id: uuid.UUID | None,
    status: str | None,
    school_year: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Requests by filter; `partner_id` keeps those of that school and those proposed to (or
    established with) that tête's offers."""
    rows = await connection.fetch(
        f"""
        SELECT {REQUEST_COLUMNS} FROM match_requests r
        WHERE ($1::uuid IS NULL OR r.school_partner_id = $1 OR EXISTS (
                SELECT 1 FROM cordee_offers o WHERE o.id = r.offer_id AND o.tete_partner_id = $1))
          AND ($2::text IS NULL OR r.status = $2)
          AND ($3::text IS NULL OR r.school_year = $3)
          AND ($4::timestamptz IS NULL OR (r.created_at, r.id) > ($4, $5::uuid))
        ORDER BY r.created_at, r.id
        LIMIT $6
        """,  # noqa: S608
        partner_id,
        status,
        school_year,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [dict(row) for row in rows]


async def offers_paired_with(
    connection: Connection, school_partner_id: uuid.UUID
) -> frozenset[uuid.UUID]:
    """The offers a school is encordé with now (never proposed to it again)."""
    rows = await connection.fetch(
        "SELECT offer_id FROM pairings WHERE school_partner_id = $1 AND status = 'active'",
        school_partner_id,
    )
    return frozenset(row["offer_id"] for row in rows)


async def live_years(
    connection: Connection, *, departement: str | None, academie: str | None
) -> list[str]:
    """The school years with requests in the live flow of schools in scope."""
    rows = await connection.fetch(
        """
        SELECT DISTINCT r.school_year
        FROM match_requests r JOIN partners s ON s.partner_id = r.school_partner_id
        WHERE r.status IN ('requested', 'proposed', 'unmatched')
          AND ($1::text IS NULL OR s.departement = $1)
          AND ($2::text IS NULL OR s.academie = $2)
        ORDER BY r.school_year
        """,
        departement,
        academie,
    )
    return [row["school_year"] for row in rows]


# --- pairings -----------------------------------------------------------------------------------

PAIRING_COLUMNS = (
    "id, request_id, offer_id, tete_partner_id, school_partner_id, school_year, status,"
    " established_at, ended_at, end_reason"
)


async def insert_pairing(connection: Connection, pairing: dict[str, Any]) -> dict[str, Any]:
    row = await connection.fetchrow(
        f"""
        INSERT INTO pairings (id, request_id, offer_id, tete_partner_id, school_partner_id,
                              school_year, status)
        VALUES ($1, $2, $3, $4, $5, $6, 'active')
        RETURNING {PAIRING_COLUMNS}
        """,  # noqa: S608
        pairing["id"],
        pairing["request_id"],
        pairing["offer_id"],
        pairing["tete_partner_id"],
        pairing["school_partner_id"],
        pairing["school_year"],
    )
    return dict(row)


async def get_pairing(
    connection: Connection, pairing_id: uuid.UUID, *, for_update: bool = False
) -> dict[str, Any] | None:
    row = await connection.fetchrow(
        f"SELECT {PAIRING_COLUMNS} FROM pairings WHERE id = $1"  # noqa: S608
        + (" FOR UPDATE" if for_update else ""),
        pairing_id,
    )
    return dict(row) if row else None


async def end_pairing(connection: Connection, pairing_id: uuid.UUID, reason: str) -> dict[str, Any]:
    row = await connection.fetchrow(
        f"""
        UPDATE pairings SET status = 'ended', ended_at = now(), end_reason = $2
        WHERE id = $1 RETURNING {PAIRING_COLUMNS}
        """,  # noqa: S608
        pairing_id,
        reason,
    )
    return dict(row)


async def active_pairings_before(connection: Connection, school_year: str) -> list[dict[str, Any]]:
    """Active pairings of school years before ``school_year``, locked: they are over."""
    rows = await connection.fetch(
        f"SELECT {PAIRING_COLUMNS} FROM pairings"  # noqa: S608
        " WHERE status = 'active' AND school_year < $1 ORDER BY id FOR UPDATE",
        school_year,
    )
    return [dict(row) for row in rows]


async def list_pairings(
    connection: Connection,
    *,
    partner_id: uuid.UUID | None,
    status: str | None,
    school_year: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Pairings by filter; `partner_id` keeps those where it is the tête or the school."""
    rows = await connection.fetch(
        f"""
        SELECT {PAIRING_COLUMNS} FROM pairings
        WHERE ($1::uuid IS NULL OR tete_partner_id = $1 OR school_partner_id = $1)
          AND ($2::text IS NULL OR status = $2)
          AND ($3::text IS NULL OR school_year = $3)
          AND ($4::timestamptz IS NULL OR (established_at, id) > ($4, $5::uuid))
        ORDER BY established_at, id
        LIMIT $6
        """,  # noqa: S608
        partner_id,
        status,
        school_year,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [dict(row) for row in rows]


# --- coverage -----------------------------------------------------------------------------------


# What the annuaire calls a collège (type_etablissement).
COLLEGE_TYPE = "Collège"


async def apply_reference_school(connection: Connection, facts: dict[str, Any]) -> bool:
    """Keep a reference school unless a newer version is already there. True when applied."""
    applied = await connection.fetchval(
        """
        INSERT INTO reference_schools (uai, name, type, public_private, departement, academie,
                                       commune_code, commune_name, education_prioritaire,
                                       qpv_proximity, qpv_code, latitude, longitude, version)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
        ON CONFLICT (uai) DO UPDATE SET
            name = EXCLUDED.name, type = EXCLUDED.type, public_private = EXCLUDED.public_private,
            departement = EXCLUDED.departement, academie = EXCLUDED.academie,
            commune_code = EXCLUDED.commune_code, commune_name = EXCLUDED.commune_name,
            education_prioritaire = EXCLUDED.education_prioritaire,
            qpv_proximity = EXCLUDED.qpv_proximity, qpv_code = EXCLUDED.qpv_code,
            latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude,
            version = EXCLUDED.version, updated_at = now()
        WHERE reference_schools.version < EXCLUDED.version
        RETURNING true
        """,
        facts["uai"],
        facts["name"],
        facts["type"],
        facts.get("public_private"),
        facts.get("departement"),
        facts.get("academie"),
        facts.get("commune_code"),
        facts.get("commune_name"),
        facts.get("education_prioritaire"),
        facts.get("qpv_proximity"),
        facts.get("qpv_code"),
        facts.get("latitude"),
        facts.get("longitude"),
        facts["version"],
    )
    return bool(applied)


async def coverage(
    connection: Connection, *, school_year: str, departement: str | None, academie: str | None
) -> list[dict[str, Any]]:
    """Every REP+ and REP collège of the reference in scope, registered in Maillage or not:
    the partner that registered with its UAI (none when it never did or was rejected), and
    whether it is encordé: a partner with its UAI has an active pairing this school year."""
    rows = await connection.fetch(
        """
        SELECT r.uai, r.name, r.commune_code, r.commune_name, r.education_prioritaire,
               p.partner_id,
               EXISTS (
                   SELECT 1 FROM partners school
                   JOIN pairings pairing ON pairing.school_partner_id = school.partner_id
                   WHERE school.uai = r.uai AND pairing.status = 'active'
                     AND pairing.school_year = $1) AS encorde
        FROM reference_schools r
        LEFT JOIN LATERAL (
            SELECT partner_id FROM partners
            WHERE partners.uai = r.uai AND partners.status <> 'rejected'
            ORDER BY partners.status = 'verified' DESC, partners.updated_at DESC
            LIMIT 1
        ) AS p ON true
        WHERE r.type = $4 AND r.education_prioritaire IN ('REP+', 'REP')
          AND ($2::text IS NULL OR r.departement = $2)
          AND ($3::text IS NULL OR r.academie = $3)
        ORDER BY r.uai
        """,
        school_year,
        departement,
        academie,
        COLLEGE_TYPE,
    )
    return [dict(row) for row in rows]


# --- campaigns ----------------------------------------------------------------------------------


async def insert_campaign(
    connection: Connection,
    campaign_id: uuid.UUID,
    scope: dict[str, Any],
    summary: dict[str, Any],
    run_by: str,
) -> dict[str, Any]:
    row = await connection.fetchrow(
        """
        INSERT INTO campaigns (id, scope, summary, run_by) VALUES ($1, $2, $3, $4)
        RETURNING id, scope, summary, run_by, created_at
        """,
        campaign_id,
        scope,
        summary,
        run_by,
    )
    return dict(row)


async def get_campaign(connection: Connection, campaign_id: uuid.UUID) -> dict[str, Any] | None:
    row = await connection.fetchrow(
        "SELECT id, scope, summary, run_by, created_at FROM campaigns WHERE id = $1", campaign_id
    )
    return dict(row) if row else None


def _uuid(value: uuid.UUID | str) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)
