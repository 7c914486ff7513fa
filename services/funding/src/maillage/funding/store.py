"""SQL of the funding service: asyncpg queries on its own database only.

Lock order, always the same so that concurrent use cases never deadlock:

1. the envelope (``envelope_for(..., for_update=True)``), when money moves;
2. the convention (``get_convention(..., for_update=True)``);
3. its tranche or report;
4. the audit head (``lock_audit_head``), last, just before the audit row is written.

The caller passes ``now``: there is one clock, and tests can move it. Amounts are integer cents.

Territory goes into the query (decision 64): a reader's ``departements`` (``None`` for every
département, else a list, possibly empty) keeps out the envelopes and conventions of other
départements, and with them their tranches, reports, reversements and audit rows: another
département's object is not found, as a missing one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import date, datetime
from typing import Any

import asyncpg

# --- partners (read model) -----------------------------------------------------------------------


async def apply_partner(connection: asyncpg.Connection, facts: dict[str, Any]) -> bool:
    """Keep a partner's facts; False when the kept version is already as new."""
    applied = await connection.fetchval(
        """
        INSERT INTO partners AS kept
            (partner_id, kind, legal_name, status, siret, rna, departement, version, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
        ON CONFLICT (partner_id) DO UPDATE SET
            kind = EXCLUDED.kind, legal_name = EXCLUDED.legal_name, status = EXCLUDED.status,
            siret = EXCLUDED.siret, rna = EXCLUDED.rna, departement = EXCLUDED.departement,
            version = EXCLUDED.version, updated_at = now()
        WHERE kept.version < EXCLUDED.version
        RETURNING true
        """,
        facts["partner_id"],
        facts["kind"],
        facts["legal_name"],
        facts["status"],
        facts.get("siret"),
        facts.get("rna"),
        facts.get("departement"),
        facts["version"],
    )
    return bool(applied)


async def get_partner(
    connection: asyncpg.Connection, partner_id: uuid.UUID
) -> dict[str, Any] | None:
    row = await connection.fetchrow("SELECT * FROM partners WHERE partner_id = $1", partner_id)
    return dict(row) if row else None


async def partners_named(
    connection: asyncpg.Connection, partner_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, Any]]:
    rows = await connection.fetch(
        "SELECT * FROM partners WHERE partner_id = ANY($1::uuid[])", list(partner_ids)
    )
    return {row["partner_id"]: dict(row) for row in rows}


# --- envelopes -----------------------------------------------------------------------------------


async def insert_envelope(
    connection: asyncpg.Connection,
    *,
    envelope_id: uuid.UUID,
    departement: str,
    year: int,
    ae_cents: int,
    cp_cents: int,
    created_by: str,
    now: datetime,
) -> dict[str, Any] | None:
    """The new envelope; None when the département already has one for that year."""
    row = await connection.fetchrow(
        """
        INSERT INTO envelopes (id, departement, year, ae_cents, cp_cents, created_by,
                               created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
        ON CONFLICT (departement, year) DO NOTHING
        RETURNING *
        """,
        envelope_id,
        departement,
        year,
        ae_cents,
        cp_cents,
        created_by,
        now,
    )
    return dict(row) if row else None


async def get_envelope(
    connection: asyncpg.Connection,
    envelope_id: uuid.UUID,
    *,
    departements: Sequence[str] | None = None,
) -> dict[str, Any] | None:
    """The envelope; None when unknown or outside ``departements``."""
    row = await connection.fetchrow(
        "SELECT * FROM envelopes WHERE id = $1 AND ($2::text[] IS NULL OR departement = ANY($2))",
        envelope_id,
        departements,
    )
    return dict(row) if row else None


async def envelope_for(
    connection: asyncpg.Connection, departement: str, year: int, *, for_update: bool = False
) -> dict[str, Any] | None:
    """The envelope of a département and year (locked first in the lock order when asked)."""
    lock = " FOR UPDATE" if for_update else ""
    row = await connection.fetchrow(
        f"SELECT * FROM envelopes WHERE departement = $1 AND year = $2{lock}",  # noqa: S608
        departement,
        year,
    )
    return dict(row) if row else None


async def list_envelopes(
    connection: asyncpg.Connection,
    *,
    year: int | None,
    departement: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    departements: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        """
        SELECT * FROM envelopes
        WHERE ($1::int IS NULL OR year = $1) AND ($2::text IS NULL OR departement = $2)
          AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4))
          AND ($6::text[] IS NULL OR departement = ANY($6))
        ORDER BY created_at, id LIMIT $5
        """,
        year,
        departement,
        after[0] if after else None,
        after[1] if after else None,
        limit,
        departements,
    )
    return [dict(row) for row in rows]


async def engage(
    connection: asyncpg.Connection, envelope_id: uuid.UUID, amount_cents: int, now: datetime
) -> dict[str, Any]:
    """Consume AE (the CHECK refuses going beyond the delegated credits)."""
    row = await connection.fetchrow(
        "UPDATE envelopes SET ae_engaged_cents = ae_engaged_cents + $2, updated_at = $3"
        " WHERE id = $1 RETURNING *",
        envelope_id,
        amount_cents,
        now,
    )
    return dict(row)


async def disburse(
    connection: asyncpg.Connection, envelope_id: uuid.UUID, amount_cents: int, now: datetime
) -> dict[str, Any]:
    """Consume CP (the CHECK refuses going beyond the delegated credits)."""
    row = await connection.fetchrow(
        "UPDATE envelopes SET cp_paid_cents = cp_paid_cents + $2, updated_at = $3"
        " WHERE id = $1 RETURNING *",
        envelope_id,
        amount_cents,
        now,
    )
    return dict(row)


# --- conventions ---------------------------------------------------------------------------------


async def insert_convention(
    connection: asyncpg.Connection, convention: dict[str, Any]
) -> dict[str, Any]:
    row = await connection.fetchrow(
        """
        INSERT INTO conventions (
            id, beneficiary_partner_id, departement, object, cite_educative, first_year,
            yearly_amounts_cents, amount_cents, budget_cents, cofinancements,
            cofinancer_partner_ids, legal_act, advance_percent, status, recorded_by,
            created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::jsonb, $11, $12, $13, 'draft',
                $14, $15, $15)
        RETURNING *
        """,
        convention["id"],
        convention["beneficiary_partner_id"],
        convention["departement"],
        convention["object"],
        convention["cite_educative"],
        convention["first_year"],
        convention["yearly_amounts_cents"],
        convention["amount_cents"],
        convention["budget_cents"],
        json.dumps(convention["cofinancements"], default=str),
        convention["cofinancer_partner_ids"],
        convention["legal_act"],
        convention["advance_percent"],
        convention["recorded_by"],
        convention["created_at"],
    )
    return _convention(row)


def _convention(row: asyncpg.Record) -> dict[str, Any]:
    convention = dict(row)
    if isinstance(convention["cofinancements"], str):
        convention["cofinancements"] = json.loads(convention["cofinancements"])
    return convention


async def get_convention(
    connection: asyncpg.Connection,
    convention_id: uuid.UUID,
    *,
    partner_id: uuid.UUID | None = None,
    departements: Sequence[str] | None = None,
    for_update: bool = False,
) -> dict[str, Any] | None:
    """The convention; with ``partner_id``, only when that partner is its beneficiary or one of
    its co-financers (another partner's is not found); with ``departements``, only in one of
    them."""
    lock = " FOR UPDATE" if for_update else ""
    row = await connection.fetchrow(
        "SELECT * FROM conventions WHERE id = $1 AND ($2::uuid IS NULL"  # noqa: S608
        " OR beneficiary_partner_id = $2 OR $2 = ANY(cofinancer_partner_ids))"
        " AND ($3::text[] IS NULL OR departement = ANY($3))" + lock,
        convention_id,
        partner_id,
        departements,
    )
    return _convention(row) if row else None


async def list_conventions(
    connection: asyncpg.Connection,
    *,
    partner_id: uuid.UUID | None,
    status: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    departements: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        """
        SELECT * FROM conventions
        WHERE ($1::uuid IS NULL OR beneficiary_partner_id = $1 OR $1 = ANY(cofinancer_partner_ids))
          AND ($2::text IS NULL OR status = $2)
          AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4))
          AND ($6::text[] IS NULL OR departement = ANY($6))
        ORDER BY created_at, id LIMIT $5
        """,
        partner_id,
        status,
        after[0] if after else None,
        after[1] if after else None,
        limit,
        departements,
    )
    return [_convention(row) for row in rows]


async def set_convention_state(
    connection: asyncpg.Connection,
    convention_id: uuid.UUID,
    *,
    status: str,
    now: datetime,
    instructed_by: str | None = None,
    programmed_by: str | None = None,
    committee_date: date | None = None,
    signed_by: str | None = None,
    signed_on: date | None = None,
    ej_number: str | None = None,
    envelope_id: uuid.UUID | None = None,
    ended_by: str | None = None,
    end_reason: str | None = None,
) -> dict[str, Any]:
    """The convention after a transition; a column given None keeps its value."""
    row = await connection.fetchrow(
        """
        UPDATE conventions SET
            status = $2, updated_at = $3, version = version + 1,
            instructed_by = COALESCE($4, instructed_by),
            programmed_by = COALESCE($5, programmed_by),
            committee_date = COALESCE($6, committee_date),
            signed_by = COALESCE($7, signed_by),
            signed_on = COALESCE($8, signed_on),
            ej_number = COALESCE($9, ej_number),
            envelope_id = COALESCE($10, envelope_id),
            ended_by = COALESCE($11, ended_by),
            end_reason = COALESCE($12, end_reason)
        WHERE id = $1
        RETURNING *
        """,
        convention_id,
        status,
        now,
        instructed_by,
        programmed_by,
        committee_date,
        signed_by,
        signed_on,
        ej_number,
        envelope_id,
        ended_by,
        end_reason,
    )
    return _convention(row)


async def add_paid(
    connection: asyncpg.Connection, convention_id: uuid.UUID, amount_cents: int, now: datetime
) -> dict[str, Any]:
    """Count a payment (the CHECK refuses paying beyond the convention's amount)."""
    row = await connection.fetchrow(
        "UPDATE conventions SET paid_cents = paid_cents + $2, updated_at = $3,"
        " version = version + 1 WHERE id = $1 RETURNING *",
        convention_id,
        amount_cents,
        now,
    )
    return _convention(row)


# --- tranches ------------------------------------------------------------------------------------


async def insert_tranches(
    connection: asyncpg.Connection,
    convention_id: uuid.UUID,
    tranches: Sequence[tuple[int, int, str, int]],
    now: datetime,
) -> None:
    """Insert the schedule: (number, year, kind, amount_cents) each, all ``planned``."""
    await connection.executemany(
        """
        INSERT INTO tranches (id, convention_id, number, year, kind, amount_cents, status,
                              created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, 'planned', $7, $7)
        """,
        [(uuid.uuid4(), convention_id, *tranche, now) for tranche in tranches],
    )


async def tranches_of(
    connection: asyncpg.Connection, convention_id: uuid.UUID
) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        "SELECT * FROM tranches WHERE convention_id = $1 ORDER BY number", convention_id
    )
    return [dict(row) for row in rows]


async def get_tranche(
    connection: asyncpg.Connection, tranche_id: uuid.UUID
) -> dict[str, Any] | None:
    row = await connection.fetchrow("SELECT * FROM tranches WHERE id = $1", tranche_id)
    return dict(row) if row else None


async def lock_tranche(
    connection: asyncpg.Connection, tranche_id: uuid.UUID
) -> dict[str, Any] | None:
    """The tranche, locked (after its convention and envelope in the lock order)."""
    row = await connection.fetchrow("SELECT * FROM tranches WHERE id = $1 FOR UPDATE", tranche_id)
    return dict(row) if row else None


async def set_tranche_state(
    connection: asyncpg.Connection,
    tranche_id: uuid.UUID,
    *,
    status: str,
    now: datetime,
    requested: bool = False,
    instructed_by: str | None = None,
    approved_by: str | None = None,
    paid_by: str | None = None,
    rejected_by: str | None = None,
    reason: str | None = None,
    paid_amount_cents: int | None = None,
    paid_on: date | None = None,
    payment_reference: str | None = None,
    envelope_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """The tranche after a transition. A new request starts a new round: the names of the last
    round's instructor and approver are kept only in the audit log."""
    row = await connection.fetchrow(
        """
        UPDATE tranches SET
            status = $2, updated_at = $3, version = version + 1,
            requested_at = CASE WHEN $4 THEN $3 ELSE requested_at END,
            instructed_by = CASE WHEN $4 THEN NULL ELSE COALESCE($5, instructed_by) END,
            approved_by = CASE WHEN $4 THEN NULL ELSE COALESCE($6, approved_by) END,
            paid_by = COALESCE($7, paid_by),
            rejected_by = CASE WHEN $4 THEN NULL ELSE COALESCE($8, rejected_by) END,
            reason = CASE WHEN $4 THEN NULL ELSE COALESCE($9, reason) END,
            paid_amount_cents = COALESCE($10, paid_amount_cents),
            paid_on = COALESCE($11, paid_on),
            payment_reference = COALESCE($12, payment_reference),
            envelope_id = COALESCE($13, envelope_id)
        WHERE id = $1
        RETURNING *
        """,
        tranche_id,
        status,
        now,
        requested,
        instructed_by,
        approved_by,
        paid_by,
        rejected_by,
        reason,
        paid_amount_cents,
        paid_on,
        payment_reference,
        envelope_id,
    )
    return dict(row)


# --- conflicts of interest -----------------------------------------------------------------------


async def declare_interest(
    connection: asyncpg.Connection,
    *,
    staff_subject: str,
    partner_id: uuid.UUID,
    declared_by: str,
    now: datetime,
) -> dict[str, Any]:
    row = await connection.fetchrow(
        """
        INSERT INTO staff_interests (staff_subject, partner_id, declared_by, declared_at)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (staff_subject, partner_id) DO UPDATE SET staff_subject = EXCLUDED.staff_subject
        RETURNING *
        """,
        staff_subject,
        partner_id,
        declared_by,
        now,
    )
    return dict(row)


async def interests_of(connection: asyncpg.Connection, staff_subject: str) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        "SELECT * FROM staff_interests WHERE staff_subject = $1 ORDER BY declared_at, partner_id",
        staff_subject,
    )
    return [dict(row) for row in rows]


# --- comptes-rendus and reversements -------------------------------------------------------------


async def get_report(
    connection: asyncpg.Connection, convention_id: uuid.UUID, year: int, *, for_update: bool = False
) -> dict[str, Any] | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await connection.fetchrow(
        "SELECT * FROM reports WHERE convention_id = $1 AND year = $2" + lock,  # noqa: S608
        convention_id,
        year,
    )
    return _report(row) if row else None


def _report(row: asyncpg.Record) -> dict[str, Any]:
    report = dict(row)
    if isinstance(report["lines"], str):
        report["lines"] = json.loads(report["lines"])
    return report


async def reports_of(
    connection: asyncpg.Connection, convention_id: uuid.UUID
) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        "SELECT * FROM reports WHERE convention_id = $1 ORDER BY year", convention_id
    )
    return [_report(row) for row in rows]


async def upsert_report(
    connection: asyncpg.Connection,
    *,
    convention_id: uuid.UUID,
    year: int,
    lines: list[dict[str, Any]],
    spent_cents: int,
    achievements: str,
    now: datetime,
) -> dict[str, Any]:
    """File (or file again, after changes were asked) the year's compte-rendu."""
    row = await connection.fetchrow(
        """
        INSERT INTO reports (id, convention_id, year, status, lines, spent_cents, achievements,
                             filed_at)
        VALUES ($1, $2, $3, 'filed', $4::text::jsonb, $5, $6, $7)
        ON CONFLICT (convention_id, year) DO UPDATE SET
            status = 'filed', lines = EXCLUDED.lines, spent_cents = EXCLUDED.spent_cents,
            achievements = EXCLUDED.achievements, filed_at = EXCLUDED.filed_at,
            decided_by = NULL, decided_at = NULL, remarks = NULL
        RETURNING *
        """,
        uuid.uuid4(),
        convention_id,
        year,
        json.dumps(lines),
        spent_cents,
        achievements,
        now,
    )
    return _report(row)


async def decide_report(
    connection: asyncpg.Connection,
    report_id: uuid.UUID,
    *,
    status: str,
    decided_by: str,
    remarks: str | None,
    due_back_cents: int | None,
    now: datetime,
) -> dict[str, Any]:
    row = await connection.fetchrow(
        """
        UPDATE reports SET status = $2, decided_by = $3, remarks = $4, due_back_cents = $5,
                           decided_at = $6
        WHERE id = $1 RETURNING *
        """,
        report_id,
        status,
        decided_by,
        remarks,
        due_back_cents,
        now,
    )
    return _report(row)


async def paid_in_year(connection: asyncpg.Connection, convention_id: uuid.UUID, year: int) -> int:
    """What the convention's tranches of ``year`` paid, in cents."""
    paid = await connection.fetchval(
        "SELECT COALESCE(sum(paid_amount_cents), 0) FROM tranches"
        " WHERE convention_id = $1 AND year = $2 AND status = 'paid'",
        convention_id,
        year,
    )
    return int(paid)


async def insert_reversement(
    connection: asyncpg.Connection,
    *,
    convention_id: uuid.UUID,
    report_id: uuid.UUID,
    year: int,
    amount_cents: int,
    now: datetime,
) -> dict[str, Any]:
    row = await connection.fetchrow(
        """
        INSERT INTO reversements (id, convention_id, report_id, year, amount_cents, ordered_at)
        VALUES ($1, $2, $3, $4, $5, $6) RETURNING *
        """,
        uuid.uuid4(),
        convention_id,
        report_id,
        year,
        amount_cents,
        now,
    )
    return dict(row)


async def receive_reversement(
    connection: asyncpg.Connection,
    reversement_id: uuid.UUID,
    received_by: str,
    now: datetime,
    *,
    departements: Sequence[str] | None = None,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The reversement before and after it is marked received (locked); (None, None) when
    unknown or its convention is outside ``departements``; after is None when it was not
    ``ordered``."""
    before = await connection.fetchrow(
        """
        SELECT r.* FROM reversements r JOIN conventions c ON c.id = r.convention_id
        WHERE r.id = $1 AND ($2::text[] IS NULL OR c.departement = ANY($2))
        FOR UPDATE OF r
        """,
        reversement_id,
        departements,
    )
    if before is None:
        return None, None
    if before["status"] != "ordered":
        return dict(before), None
    after = await connection.fetchrow(
        "UPDATE reversements SET status = 'received', received_at = $2, received_by = $3"
        " WHERE id = $1 RETURNING *",
        reversement_id,
        now,
        received_by,
    )
    return dict(before), dict(after)


async def reversements_of(
    connection: asyncpg.Connection, convention_id: uuid.UUID
) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        "SELECT * FROM reversements WHERE convention_id = $1 ORDER BY year", convention_id
    )
    return [dict(row) for row in rows]


# --- the audit log -------------------------------------------------------------------------------


async def lock_audit_head(connection: asyncpg.Connection) -> tuple[int, str]:
    """The last sequence number and hash of the chain, locked until commit (last in the lock
    order): appenders follow each other, so the chain has one order."""
    row = await connection.fetchrow("SELECT last_seq, last_hash FROM audit_head FOR UPDATE")
    return int(row["last_seq"]), str(row["last_hash"])


async def append_audit(connection: asyncpg.Connection, row: dict[str, Any]) -> None:
    """Write one audit row and move the head to it."""
    await connection.execute(
        """
        INSERT INTO audit_log (seq, at, actor, role, action, object_type, object_id, before,
                               after, request_id, trace_id, previous_hash, hash)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, $9::text::jsonb, $10, $11, $12, $13)
        """,
        row["seq"],
        row["at"],
        row["actor"],
        row["role"],
        row["action"],
        row["object_type"],
        row["object_id"],
        json.dumps(row["before"]) if row["before"] is not None else None,
        json.dumps(row["after"]) if row["after"] is not None else None,
        row["request_id"],
        row["trace_id"],
        row["previous_hash"],
        row["hash"],
    )
    await connection.execute(
        "UPDATE audit_head SET last_seq = $1, last_hash = $2", row["seq"], row["hash"]
    )


def _audit(row: asyncpg.Record) -> dict[str, Any]:
    entry = dict(row)
    for name in ("before", "after"):
        if isinstance(entry[name], str):
            entry[name] = json.loads(entry[name])
    return entry


async def audit_page(
    connection: asyncpg.Connection,
    *,
    object_id: uuid.UUID | None,
    after_seq: int,
    limit: int,
    departements: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Audit rows after ``after_seq``; with ``departements``, only the rows about an envelope,
    convention, tranche, report or reversement of one of them (a declared interest names a
    partner, no département: national readers only)."""
    rows = await connection.fetch(
        """
        SELECT * FROM audit_log a
        WHERE seq > $1 AND ($2::uuid IS NULL OR object_id = $2)
          AND ($4::text[] IS NULL OR COALESCE(
                (SELECT departement FROM envelopes WHERE id = a.object_id),
                (SELECT departement FROM conventions WHERE id = a.object_id),
                (SELECT c.departement FROM tranches t JOIN conventions c ON c.id = t.convention_id
                 WHERE t.id = a.object_id),
                (SELECT c.departement FROM reports r JOIN conventions c ON c.id = r.convention_id
                 WHERE r.id = a.object_id),
                (SELECT c.departement FROM reversements v
                 JOIN conventions c ON c.id = v.convention_id WHERE v.id = a.object_id)
              ) = ANY($4))
        ORDER BY seq LIMIT $3
        """,
        after_seq,
        object_id,
        limit,
        departements,
    )
    return [_audit(row) for row in rows]


async def audit_rows(
    connection: asyncpg.Connection, batch: int = 5000
) -> AsyncIterator[dict[str, Any]]:
    """Every audit row in chain order, read by keyset batches (memory stays flat)."""
    after = 0
    while True:
        rows = await connection.fetch(
            "SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2", after, batch
        )
        for row in rows:
            yield _audit(row)
        if len(rows) < batch:
            return
        after = rows[-1]["seq"]


async def audit_head(connection: asyncpg.Connection) -> tuple[int, str]:
    row = await connection.fetchrow("SELECT last_seq, last_hash FROM audit_head")
    return int(row["last_seq"]), str(row["last_hash"])


# --- exports -------------------------------------------------------------------------------------


async def conventions_signed_in(connection: asyncpg.Connection, year: int) -> list[dict[str, Any]]:
    """Conventions signed in ``year`` (closed since or not), with their beneficiary's name and
    identifiers from the read model, in signing order (then recording order)."""
    rows = await connection.fetch(
        """
        SELECT c.*, p.legal_name AS beneficiary_name, p.siret AS beneficiary_siret,
               p.rna AS beneficiary_rna
        FROM conventions c LEFT JOIN partners p ON p.partner_id = c.beneficiary_partner_id
        WHERE c.status IN ('signed', 'closed')
          AND c.signed_on >= make_date($1, 1, 1) AND c.signed_on < make_date($1 + 1, 1, 1)
        ORDER BY c.signed_on, c.created_at, c.id
        """,
        year,
    )
    return [_convention(row) for row in rows]


async def tranches_of_year(
    connection: asyncpg.Connection, year: int, *, departements: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """The tranches of ``year`` with their convention's identifiers, in ``departements``."""
    rows = await connection.fetch(
        """
        SELECT t.*, c.beneficiary_partner_id, c.departement, c.ej_number
        FROM tranches t JOIN conventions c ON c.id = t.convention_id
        WHERE t.year = $1 AND ($2::text[] IS NULL OR c.departement = ANY($2))
        ORDER BY c.created_at, c.id, t.number
        """,
        year,
        departements,
    )
    return [dict(row) for row in rows]
