"""SQL of the stages3e service: asyncpg queries on its own database only.

Lock order, everywhere: an offer's row, then its weeks' rows (by offer id, then Monday), then
applications' rows. An acceptance shares the offer's lock (its status holds still) and takes the
week's; an application takes the offer's lock FOR NO KEY UPDATE (applications to one offer run
one after the other, so the count against ``max_candidates`` holds); an offer's update or
withdrawal takes the offer's lock, then its weeks'; a confirmation
first takes the pupil's advisory lock (:func:`lock_pupil`: two confirmations or applications of
one pupil run one after the other), then every week it touches in that order.

The caller passes ``now`` and ``today``: there is one clock, and tests can move it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg

Connection = asyncpg.Connection | asyncpg.Pool

# --- the read model of partners -----------------------------------------------------------------


@dataclass(frozen=True)
class KnownPartner:
    """What this service knows of a partner, from the registry's events."""

    partner_id: uuid.UUID
    kind: str
    legal_name: str
    status: str
    uai: str | None
    commune_code: str | None
    commune_name: str | None
    departement: str | None
    academie: str | None
    latitude: float | None
    longitude: float | None
    education_prioritaire: str | None
    qpv_proximity: bool | None


_PARTNER_COLUMNS = (
    "partner_id, kind, legal_name, status, uai, commune_code, commune_name, departement,"
    " academie, latitude, longitude, education_prioritaire, qpv_proximity"
)


async def apply_partner(connection: Connection, facts: dict[str, Any]) -> bool:
    """Keep the partner's facts unless a newer version is already there. True when applied."""
    applied = await connection.fetchval(
        """
        INSERT INTO partners (partner_id, kind, legal_name, status, uai, commune_code,
                              commune_name, departement, academie, latitude, longitude,
                              education_prioritaire, qpv_proximity, version)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
        ON CONFLICT (partner_id) DO UPDATE SET
            kind = EXCLUDED.kind, legal_name = EXCLUDED.legal_name, status = EXCLUDED.status,
            uai = EXCLUDED.uai, commune_code = EXCLUDED.commune_code,
            commune_name = EXCLUDED.commune_name, departement = EXCLUDED.departement,
            academie = EXCLUDED.academie, latitude = EXCLUDED.latitude,
            longitude = EXCLUDED.longitude, education_prioritaire = EXCLUDED.education_prioritaire,
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
        facts.get("commune_code"),
        facts.get("commune_name"),
        facts.get("departement"),
        facts.get("academie"),
        facts.get("latitude"),
        facts.get("longitude"),
        facts.get("education_prioritaire"),
        facts.get("qpv_proximity"),
        facts["version"],
    )
    return bool(applied)


async def get_partner(connection: Connection, partner_id: uuid.UUID) -> KnownPartner | None:
    row = await connection.fetchrow(
        f"SELECT {_PARTNER_COLUMNS} FROM partners WHERE partner_id = $1",  # noqa: S608
        partner_id,
    )
    return KnownPartner(**dict(row)) if row else None


# --- offers -------------------------------------------------------------------------------------

OFFER_COLUMNS = (
    "o.id, o.partner_id, o.remote_id, o.title, o.description, o.sector, o.address,"
    " o.commune_code, o.commune_name, o.departement, o.academie, o.latitude, o.longitude,"
    " o.daily_hours, o.accessible, o.accessibility, o.max_candidates, o.school_year, o.status,"
    " o.closed_reason, o.version, o.created_at, o.updated_at"
)
_OFFER_VALUES = (
    "title, description, sector, address, commune_code, commune_name, departement, academie,"
    " latitude, longitude, daily_hours, accessible, accessibility, max_candidates, school_year"
)


def _offer_arguments(offer: dict[str, Any]) -> list[Any]:
    return [
        offer["title"],
        offer["description"],
        offer["sector"],
        offer["address"],
        offer["commune_code"],
        offer["commune_name"],
        offer["departement"],
        offer["academie"],
        offer["latitude"],
        offer["longitude"],
        offer["daily_hours"],
        offer["accessible"],
        offer["accessibility"],
        offer["max_candidates"],
        offer["school_year"],
    ]


async def insert_offer(connection: Connection, offer: dict[str, Any]) -> dict[str, Any]:
    """A new published offer (its weeks are written by :func:`put_week`)."""
    row = await connection.fetchrow(
        f"""
        INSERT INTO stage_offers AS o (id, partner_id, remote_id, status, {_OFFER_VALUES})
        VALUES ($1, $2, $3, 'published', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                $15, $16, $17, $18)
        RETURNING {OFFER_COLUMNS}
        """,  # noqa: S608
        offer["id"],
        offer["partner_id"],
        offer["remote_id"],
        *_offer_arguments(offer),
    )
    return dict(row)


async def update_offer(
    connection: Connection, offer_id: uuid.UUID, offer: dict[str, Any]
) -> dict[str, Any]:
    """Write every field of the offer again and bump its version."""
    row = await connection.fetchrow(
        f"""
        UPDATE stage_offers AS o SET ({_OFFER_VALUES}) =
            ($2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16),
            version = version + 1, updated_at = now()
        WHERE id = $1
        RETURNING {OFFER_COLUMNS}
        """,  # noqa: S608
        offer_id,
        *_offer_arguments(offer),
    )
    return dict(row)


async def set_offer_status(
    connection: Connection, offer_id: uuid.UUID, status: str, closed_reason: str | None = None
) -> dict[str, Any]:
    row = await connection.fetchrow(
        f"""
        UPDATE stage_offers AS o SET status = $2, closed_reason = $3, version = version + 1,
            updated_at = now()
        WHERE id = $1
        RETURNING {OFFER_COLUMNS}
        """,  # noqa: S608
        offer_id,
        status,
        closed_reason,
    )
    return dict(row)


async def get_offer(
    connection: Connection,
    offer_id: uuid.UUID,
    *,
    partner_id: uuid.UUID | None = None,
    lock: str | None = None,
) -> dict[str, Any] | None:
    """One offer; ``partner_id`` scopes it to that partner's; ``lock`` is ``"update"``,
    ``"apply"`` (FOR NO KEY UPDATE: one application at a time per offer, while the foreign keys
    of other rows to it still pass) or ``"share"`` (the offer's row lock, first in the lock
    order)."""
    suffix = {
        None: "",
        "update": " FOR UPDATE",
        "apply": " FOR NO KEY UPDATE",
        "share": " FOR SHARE",
    }[lock]
    row = await connection.fetchrow(
        f"SELECT {OFFER_COLUMNS} FROM stage_offers o"  # noqa: S608
        " WHERE o.id = $1 AND ($2::uuid IS NULL OR o.partner_id = $2)" + suffix,
        offer_id,
        partner_id,
    )
    return dict(row) if row else None


async def offer_by_remote_id(
    connection: Connection, partner_id: uuid.UUID, remote_id: str, *, for_update: bool = False
) -> dict[str, Any] | None:
    """The partner's own offer under its ``remote_id`` (never another partner's)."""
    row = await connection.fetchrow(
        f"SELECT {OFFER_COLUMNS} FROM stage_offers o"  # noqa: S608
        " WHERE o.partner_id = $1 AND o.remote_id = $2" + (" FOR UPDATE" if for_update else ""),
        partner_id,
        remote_id,
    )
    return dict(row) if row else None


async def lock_remote_id(connection: Connection, partner_id: uuid.UUID, remote_id: str) -> None:
    """Two upserts of one remote id by one partner run one after the other (the first creates,
    the second updates), instead of one failing on the unique index."""
    await connection.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 7))", f"{partner_id}/{remote_id}"
    )


_WEEK_COLUMNS = "offer_id, monday, week, seats, reserved, held, held_by_ineligible"


async def weeks_of(
    connection: Connection, offer_ids: Sequence[uuid.UUID], *, for_update: bool = False
) -> list[dict[str, Any]]:
    """The weeks of these offers, by offer then Monday (the lock order)."""
    rows = await connection.fetch(
        f"SELECT {_WEEK_COLUMNS} FROM offer_weeks WHERE offer_id = ANY($1::uuid[])"  # noqa: S608
        " ORDER BY offer_id, monday" + (" FOR UPDATE" if for_update else ""),
        list(offer_ids),
    )
    return [dict(row) for row in rows]


async def lock_week(connection: Connection, offer_id: uuid.UUID, monday: date) -> dict[str, Any]:
    row = await connection.fetchrow(
        f"SELECT {_WEEK_COLUMNS} FROM offer_weeks"  # noqa: S608
        " WHERE offer_id = $1 AND monday = $2 FOR UPDATE",
        offer_id,
        monday,
    )
    return dict(row)


async def lock_weeks(connection: Connection, keys: Sequence[tuple[uuid.UUID, date]]) -> None:
    """Lock these weeks in the lock order (offer id, then Monday)."""
    await connection.execute(
        """
        SELECT 1 FROM offer_weeks w
        JOIN unnest($1::uuid[], $2::date[]) AS k (offer_id, monday)
          ON w.offer_id = k.offer_id AND w.monday = k.monday
        ORDER BY w.offer_id, w.monday
        FOR UPDATE OF w
        """,
        [key[0] for key in keys],
        [key[1] for key in keys],
    )


async def put_week(
    connection: Connection, offer_id: uuid.UUID, monday: date, week: str, seats: int, reserved: int
) -> None:
    """Create or change a week of an offer; it takes the offer's point (``location``), as every
    week of an offer is rewritten whenever the offer changes."""
    await connection.execute(
        """
        INSERT INTO offer_weeks (offer_id, monday, week, seats, reserved, location)
        SELECT $1, $2, $3, $4, $5, o.location FROM stage_offers o WHERE o.id = $1
        ON CONFLICT (offer_id, monday) DO UPDATE SET seats = EXCLUDED.seats,
            reserved = EXCLUDED.reserved, location = EXCLUDED.location
        """,
        offer_id,
        monday,
        week,
        seats,
        reserved,
    )


async def delete_week(connection: Connection, offer_id: uuid.UUID, monday: date) -> None:
    await connection.execute(
        "DELETE FROM offer_weeks WHERE offer_id = $1 AND monday = $2", offer_id, monday
    )


async def weeks_with_applications(connection: Connection, offer_id: uuid.UUID) -> set[date]:
    """The weeks of an offer some application names (they cannot be removed)."""
    rows = await connection.fetch(
        "SELECT DISTINCT monday FROM applications WHERE offer_id = $1", offer_id
    )
    return {row["monday"] for row in rows}


async def move_held(
    connection: Connection,
    offer_id: uuid.UUID,
    monday: date,
    *,
    held: int,
    by_ineligible: int,
) -> None:
    """Add to a week's held seats (negative frees them), under the week's lock. The table's
    CHECKs refuse any overbooking even if a caller forgot the lock."""
    await connection.execute(
        """
        UPDATE offer_weeks SET held = held + $3, held_by_ineligible = held_by_ineligible + $4
        WHERE offer_id = $1 AND monday = $2
        """,
        offer_id,
        monday,
        held,
        by_ineligible,
    )


async def list_offers(
    connection: Connection,
    *,
    partner_id: uuid.UUID | None,
    status: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        f"""
        SELECT {OFFER_COLUMNS} FROM stage_offers o
        WHERE ($1::uuid IS NULL OR o.partner_id = $1)
          AND ($2::text IS NULL OR o.status = $2)
          AND ($3::timestamptz IS NULL OR (o.created_at, o.id) > ($3, $4::uuid))
        ORDER BY o.created_at, o.id
        LIMIT $5
        """,  # noqa: S608
        partner_id,
        status,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [dict(row) for row in rows]


async def search_offers(
    connection: Connection,
    *,
    latitude: float,
    longitude: float,
    radius_m: float,
    mondays: Sequence[date] | None,
    sector: str | None,
    text: str | None,
    school_eligible: bool,
    today: date,
    reserved_open_days: int,
    after: tuple[float, uuid.UUID] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Published offers within ``radius_m`` metres of the point (earthdistance: the stored
    ``location`` under a GiST index, walked nearest first by its chord distance ``<->``, which
    orders as the great-circle ``distance_m`` does), nearest first, that have a week (of
    ``mondays``, or any week not yet begun) with a seat this school may take: every free seat
    when it is eligible or reserved seats are open, otherwise the unreserved ones left. ``text``
    matches title and description, accents and case ignored (a pattern of LIKE, escaped).
    Each offer comes with its ``weeks`` (those of ``mondays`` only, when given), in one round
    trip."""
    rows = await connection.fetch(
        f"""
        SELECT page.*,
               (SELECT jsonb_agg(jsonb_build_array(w.monday, w.week, w.seats, w.reserved,
                                                   w.held, w.held_by_ineligible)
                                 ORDER BY w.monday)
                FROM offer_weeks w
                WHERE w.offer_id = page.id AND ($4::date[] IS NULL OR w.monday = ANY ($4))
               ) AS weeks
        FROM (
            SELECT {OFFER_COLUMNS},
                   earth_distance(o.location, ll_to_earth($1, $2)) AS distance_m
            FROM stage_offers o
            WHERE o.status = 'published'
              AND earth_box(ll_to_earth($1, $2), $3) @> o.location
              AND earth_distance(o.location, ll_to_earth($1, $2)) <= $3
              AND ($5::text IS NULL OR o.sector = $5)
              AND ($6::text IS NULL OR stage_search_text(o.title || ' ' || o.description)
                                       LIKE '%' || stage_search_text($6) || '%')
              AND o.id IN (
                  SELECT w.offer_id FROM offer_weeks w
                  WHERE w.monday > $8 AND ($4::date[] IS NULL OR w.monday = ANY ($4))
                    AND earth_box(ll_to_earth($1, $2), $3) @> w.location
                    AND w.held < w.seats
                    AND ($7 OR w.monday - $9::int <= $8
                         OR w.seats - w.reserved - w.held_by_ineligible > 0))
              AND ($10::float8 IS NULL
                   OR (earth_distance(o.location, ll_to_earth($1, $2)), o.id) > ($10, $11::uuid))
            ORDER BY o.location <-> ll_to_earth($1, $2), o.id
            LIMIT $12
        ) AS page
        ORDER BY page.distance_m, page.id
        """,  # noqa: S608
        latitude,
        longitude,
        radius_m,
        list(mondays) if mondays is not None else None,
        sector,
        text,
        school_eligible,
        today,
        reserved_open_days,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    found = []
    for row in rows:
        offer = dict(row)
        offer["weeks"] = [
            {
                "offer_id": offer["id"],
                "monday": date.fromisoformat(monday),
                "week": week,
                "seats": seats,
                "reserved": reserved,
                "held": held,
                "held_by_ineligible": by_ineligible,
            }
            for monday, week, seats, reserved, held, by_ineligible in offer["weeks"] or []
        ]
        found.append(offer)
    return found


async def offers_to_close(connection: Connection, today: date, limit: int) -> list[dict[str, Any]]:
    """Published or unpublished offers whose last week has begun (``past``), or whose weeks not
    yet begun are all full (``full``), locked (skipping those another pass holds)."""
    rows = await connection.fetch(
        """
        SELECT o.id, CASE WHEN last.monday <= $1 THEN 'past' ELSE 'full' END AS reason
        FROM stage_offers o
        CROSS JOIN LATERAL (SELECT max(monday) AS monday FROM offer_weeks w
                            WHERE w.offer_id = o.id) AS last
        WHERE o.status IN ('published', 'unpublished')
          AND (last.monday <= $1 OR NOT EXISTS (
                SELECT 1 FROM offer_weeks w
                WHERE w.offer_id = o.id AND w.monday > $1 AND w.held < w.seats))
        ORDER BY o.id
        LIMIT $2
        FOR UPDATE OF o SKIP LOCKED
        """,
        today,
        limit,
    )
    return [dict(row) for row in rows]


# --- applications -------------------------------------------------------------------------------

APPLICATION_COLUMNS = (
    "a.id, a.offer_id, a.monday, a.week, a.host_partner_id, a.school_partner_id,"
    " a.school_eligible, a.school_year, a.pupil_reference, a.status, a.reason, a.expires_at,"
    " a.erased_at, a.created_at, a.updated_at"
)


async def lock_pupil(connection: Connection, school_partner_id: uuid.UUID, reference: str) -> None:
    """Until commit, no other transaction applies or confirms for this pupil."""
    await connection.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 3))", f"{school_partner_id}/{reference}"
    )


async def insert_application(connection: Connection, values: dict[str, Any]) -> dict[str, Any]:
    """A new submitted application; None-free. Raises UniqueViolationError when the pupil
    already has a live application for this offer and week."""
    row = await connection.fetchrow(
        f"""
        INSERT INTO applications AS a (id, offer_id, monday, week, host_partner_id,
            school_partner_id, school_eligible, school_year, pupil_reference, status, expires_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'submitted', $10)
        RETURNING {APPLICATION_COLUMNS}
        """,  # noqa: S608
        values["id"],
        values["offer_id"],
        values["monday"],
        values["week"],
        values["host_partner_id"],
        values["school_partner_id"],
        values["school_eligible"],
        values["school_year"],
        values["pupil_reference"],
        values["expires_at"],
    )
    return dict(row)


async def get_application(
    connection: Connection,
    application_id: uuid.UUID,
    *,
    partner_id: uuid.UUID | None = None,
    for_update: bool = False,
) -> dict[str, Any] | None:
    """One application; ``partner_id`` keeps it only if that partner is its school or host."""
    row = await connection.fetchrow(
        f"SELECT {APPLICATION_COLUMNS} FROM applications a WHERE a.id = $1"  # noqa: S608
        " AND ($2::uuid IS NULL OR $2 IN (a.school_partner_id, a.host_partner_id))"
        + (" FOR UPDATE" if for_update else ""),
        application_id,
        partner_id,
    )
    return dict(row) if row else None


async def set_application_status(
    connection: Connection,
    application_id: uuid.UUID,
    status: str,
    *,
    expires_at: datetime | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    row = await connection.fetchrow(
        f"""
        UPDATE applications AS a SET status = $2, expires_at = $3,
            reason = COALESCE($4, a.reason), updated_at = now()
        WHERE id = $1
        RETURNING {APPLICATION_COLUMNS}
        """,  # noqa: S608
        application_id,
        status,
        expires_at,
        reason,
    )
    return dict(row)


async def live_applications_of_pupil(
    connection: Connection, school_partner_id: uuid.UUID, reference: str
) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        f"SELECT {APPLICATION_COLUMNS} FROM applications a"  # noqa: S608
        " WHERE a.school_partner_id = $1 AND a.pupil_reference = $2"
        " AND a.status IN ('submitted', 'accepted', 'confirmed')"
        " ORDER BY a.offer_id, a.monday, a.id",
        school_partner_id,
        reference,
    )
    return [dict(row) for row in rows]


async def live_applications_of_offer(
    connection: Connection, offer_id: uuid.UUID, *, for_update: bool = False
) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        f"SELECT {APPLICATION_COLUMNS} FROM applications a"  # noqa: S608
        " WHERE a.offer_id = $1 AND a.status IN ('submitted', 'accepted', 'confirmed')"
        " ORDER BY a.id" + (" FOR UPDATE" if for_update else ""),
        offer_id,
    )
    return [dict(row) for row in rows]


async def applications_per_week(connection: Connection, offer_id: uuid.UUID) -> dict[date, int]:
    """How many applications (any status) name each week of the offer."""
    rows = await connection.fetch(
        "SELECT monday, count(*)::int AS n FROM applications WHERE offer_id = $1 GROUP BY monday",
        offer_id,
    )
    return {row["monday"]: row["n"] for row in rows}


async def candidates_of_offer(connection: Connection, offer_id: uuid.UUID) -> int:
    """Applications of the offer that count against ``max_candidates``: every one still live."""
    count: int = await connection.fetchval(
        "SELECT count(*)::int FROM applications"
        " WHERE offer_id = $1 AND status IN ('submitted', 'accepted', 'confirmed')",
        offer_id,
    )
    return count


async def due_applications(connection: Connection, now: datetime, limit: int) -> list[uuid.UUID]:
    """Submitted or accepted applications past their expiry, oldest first."""
    rows = await connection.fetch(
        "SELECT id FROM applications WHERE status IN ('submitted', 'accepted')"
        " AND expires_at <= $1 ORDER BY expires_at, id LIMIT $2",
        now,
        limit,
    )
    return [row["id"] for row in rows]


async def list_applications(
    connection: Connection,
    *,
    partner_id: uuid.UUID | None,
    offer_id: uuid.UUID | None,
    status: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Applications by filter; ``partner_id`` keeps those of that school and those to that
    host's offers."""
    rows = await connection.fetch(
        f"""
        SELECT {APPLICATION_COLUMNS} FROM applications a
        WHERE ($1::uuid IS NULL OR $1 IN (a.school_partner_id, a.host_partner_id))
          AND ($2::uuid IS NULL OR a.offer_id = $2)
          AND ($3::text IS NULL OR a.status = $3)
          AND ($4::timestamptz IS NULL OR (a.created_at, a.id) > ($4, $5::uuid))
        ORDER BY a.created_at, a.id
        LIMIT $6
        """,  # noqa: S608
        partner_id,
        offer_id,
        status,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [dict(row) for row in rows]


async def erase_references(
    connection: Connection,
    now: datetime,
    *,
    school_years_up_to: int | None = None,
    school_partner_id: uuid.UUID | None = None,
    pupil_reference: str | None = None,
) -> int:
    """Erase pupils' references (the applications keep their facts): of every school year up to
    ``school_years_up_to``, or of one school (and one of its pupils). Returns how many."""
    result: str = await connection.execute(
        """
        UPDATE applications SET pupil_reference = NULL, erased_at = $1, updated_at = now()
        WHERE erased_at IS NULL
          AND ($2::int IS NULL OR school_year <= $2)
          AND ($3::uuid IS NULL OR school_partner_id = $3)
          AND ($4::text IS NULL OR pupil_reference = $4)
        """,
        now,
        school_years_up_to,
        school_partner_id,
        pupil_reference,
    )
    return int(result.split()[-1])


# --- schools' weeks -----------------------------------------------------------------------------


async def school_mondays(connection: Connection, school_partner_id: uuid.UUID) -> list[date]:
    mondays = await connection.fetchval(
        "SELECT mondays FROM school_weeks WHERE school_partner_id = $1", school_partner_id
    )
    return list(mondays or [])


async def put_school_mondays(
    connection: Connection, school_partner_id: uuid.UUID, mondays: Sequence[date]
) -> None:
    await connection.execute(
        """
        INSERT INTO school_weeks (school_partner_id, mondays) VALUES ($1, $2)
        ON CONFLICT (school_partner_id) DO UPDATE SET mondays = EXCLUDED.mondays,
            updated_at = now()
        """,
        school_partner_id,
        list(mondays),
    )


# --- statistics ---------------------------------------------------------------------------------


async def stats(
    connection: Connection,
    *,
    departement: str | None,
    academie: str | None,
    school_year: int,
) -> list[dict[str, Any]]:
    """Per week of the school year, in scope (the offers' département or académie): offers,
    seats, reserved seats, held seats, applications by status, and confirmed stages of pupils
    of REP+/REP collèges."""
    rows = await connection.fetch(
        """
        SELECT w.week, w.monday,
               count(DISTINCT w.offer_id)::int AS offers,
               sum(w.seats)::int AS seats,
               sum(w.reserved)::int AS reserved,
               sum(w.held)::int AS held,
               coalesce(sum(a.submitted), 0)::int AS submitted,
               coalesce(sum(a.accepted), 0)::int AS accepted,
               coalesce(sum(a.confirmed), 0)::int AS confirmed,
               coalesce(sum(a.declined), 0)::int AS declined,
               coalesce(sum(a.withdrawn), 0)::int AS withdrawn,
               coalesce(sum(a.cancelled), 0)::int AS cancelled,
               coalesce(sum(a.expired), 0)::int AS expired,
               coalesce(sum(a.confirmed_rep), 0)::int AS confirmed_rep
        FROM offer_weeks w
        JOIN stage_offers o ON o.id = w.offer_id
        LEFT JOIN LATERAL (
            SELECT count(*) FILTER (WHERE x.status = 'submitted') AS submitted,
                   count(*) FILTER (WHERE x.status = 'accepted') AS accepted,
                   count(*) FILTER (WHERE x.status = 'confirmed') AS confirmed,
                   count(*) FILTER (WHERE x.status = 'declined') AS declined,
                   count(*) FILTER (WHERE x.status = 'withdrawn') AS withdrawn,
                   count(*) FILTER (WHERE x.status = 'cancelled') AS cancelled,
                   count(*) FILTER (WHERE x.status = 'expired') AS expired,
                   count(*) FILTER (WHERE x.status = 'confirmed'
                                      AND s.education_prioritaire IN ('REP+', 'REP'))
                       AS confirmed_rep
            FROM applications x LEFT JOIN partners s ON s.partner_id = x.school_partner_id
            WHERE x.offer_id = w.offer_id AND x.monday = w.monday
        ) AS a ON true
        WHERE o.school_year = $3
          AND ($1::text IS NULL OR o.departement = $1)
          AND ($2::text IS NULL OR o.academie = $2)
        GROUP BY w.week, w.monday
        ORDER BY w.monday
        """,
        departement,
        academie,
        school_year,
    )
    return [dict(row) for row in rows]


async def count_offers(
    connection: Connection, *, departement: str | None, academie: str | None, school_year: int
) -> int:
    count: int = await connection.fetchval(
        "SELECT count(*)::int FROM stage_offers WHERE school_year = $3"
        " AND ($1::text IS NULL OR departement = $1) AND ($2::text IS NULL OR academie = $2)",
        departement,
        academie,
        school_year,
    )
    return count
