"""SQL of the registry service: asyncpg queries on its own database only."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

PARTNER_COLUMNS = (
    "id, kind, legal_name, status, siret, siren, rna, uai, address, postal_code, commune_code,"
    " commune_name, departement, latitude, longitude, cites_educatives, programmes,"
    " education_prioritaire, qpv_proximity, qpv_code, pupils, created_at, updated_at, version"
)
UPDATABLE = (
    "legal_name",
    "address",
    "postal_code",
    "commune_code",
    "commune_name",
    "departement",
    "latitude",
    "longitude",
    "cites_educatives",
    "programmes",
)


def _partner(row: asyncpg.Record | None) -> dict[str, Any] | None:
    if row is None:
        return None
    partner = dict(row)
    partner["id"] = str(partner["id"])
    return partner


async def find_by_identifiers(
    connection: asyncpg.Connection, *, siret: str | None, rna: str | None, uai: str | None
) -> tuple[str, str] | None:
    """(partner id, the identifier that matched) of a partner already holding one of these. A
    UAI is held only by a verified or suspended partner: pending registrations may share it until
    one proves control of the school (decision 41)."""
    row = await connection.fetchrow(
        """
        SELECT id,
               CASE WHEN siret = $1 THEN 'siret' WHEN rna = $2 THEN 'rna' ELSE 'uai' END AS field
        FROM partners
        WHERE siret = $1 OR rna = $2 OR (uai = $3 AND status IN ('verified', 'suspended'))
        LIMIT 1
        """,
        siret,
        rna,
        uai,
    )
    return (str(row["id"]), row["field"]) if row else None


async def insert_partner(
    connection: asyncpg.Connection, record: Mapping[str, Any]
) -> dict[str, Any]:
    names = list(record)
    placeholders = ", ".join(f"${index}" for index in range(1, len(names) + 1))
    row = await connection.fetchrow(
        f"INSERT INTO partners ({', '.join(names)}) VALUES ({placeholders})"  # noqa: S608 - names are ours
        f" RETURNING {PARTNER_COLUMNS}",
        *record.values(),
    )
    partner = _partner(row)
    assert partner is not None
    return partner


async def get_partner(
    connection: asyncpg.Connection | asyncpg.Pool,
    partner_id: uuid.UUID,
    *,
    for_update: bool = False,
) -> dict[str, Any] | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await connection.fetchrow(
        f"SELECT {PARTNER_COLUMNS} FROM partners WHERE id = $1{lock}",  # noqa: S608
        partner_id,
    )
    return _partner(row)


async def list_partners(
    connection: asyncpg.Connection | asyncpg.Pool,
    *,
    kind: str | None,
    departement: str | None,
    commune_code: str | None,
    programme: str | None,
    education_prioritaire: str | None,
    text: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    status: str | None = None,
) -> list[dict[str, Any]]:
    """Partners matching every given filter, oldest first, from after the cursor (a status:
    index ``partners_status_created_idx``)."""
    rows = await connection.fetch(
        f"""
        SELECT {PARTNER_COLUMNS} FROM partners
        WHERE ($1::text IS NULL OR kind = $1)
          AND ($2::text IS NULL OR departement = $2)
          AND ($3::text IS NULL OR commune_code = $3)
          AND ($4::text IS NULL OR $4 = ANY (programmes))
          AND ($5::text IS NULL OR education_prioritaire = $5)
          AND ($6::text IS NULL
               OR legal_name ILIKE '%' || $6 || '%' OR commune_name ILIKE '%' || $6 || '%')
          AND ($7::timestamptz IS NULL OR (created_at, id) > ($7, $8::uuid))
          AND ($10::text IS NULL OR status = $10)
        ORDER BY created_at, id
        LIMIT $9
        """,  # noqa: S608
        kind,
        departement,
        commune_code,
        programme,
        education_prioritaire,
        text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") if text else None,
        after[0] if after else None,
        after[1] if after else None,
        limit,
        status,
    )
    return [p for p in map(_partner, rows) if p is not None]


async def contacts_of(
    connection: asyncpg.Connection | asyncpg.Pool, partner_ids: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    rows = await connection.fetch(
        """
        SELECT partner_id, id, name, role, email, phone FROM partner_contacts
        WHERE partner_id = ANY ($1::uuid[]) ORDER BY partner_id, position
        """,
        list(partner_ids),
    )
    found: dict[str, list[dict[str, Any]]] = {partner_id: [] for partner_id in partner_ids}
    for row in rows:
        contact = {k: row[k] for k in ("name", "role", "email", "phone")}
        contact["id"] = str(row["id"])
        found[str(row["partner_id"])].append(contact)
    return found


async def replace_contacts(
    connection: asyncpg.Connection, partner_id: str, contacts: Sequence[Mapping[str, Any]]
) -> None:
    await connection.execute(
        "DELETE FROM partner_contacts WHERE partner_id = $1", uuid.UUID(partner_id)
    )
    await connection.executemany(
        """
        INSERT INTO partner_contacts (id, partner_id, name, role, email, phone, position)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        """,
        [
            (
                uuid.uuid4(),
                uuid.UUID(partner_id),
                c["name"],
                c["role"],
                c["email"],
                c.get("phone"),
                i,
            )
            for i, c in enumerate(contacts)
        ],
    )


async def update_partner(
    connection: asyncpg.Connection, partner_id: uuid.UUID, changes: Mapping[str, Any]
) -> dict[str, Any]:
    assigned = [name for name in changes if name in UPDATABLE]
    sets = ", ".join(f"{name} = ${index}" for index, name in enumerate(assigned, start=2))
    row = await connection.fetchrow(
        f"UPDATE partners SET {sets}, version = version + 1, updated_at = now()"  # noqa: S608
        f" WHERE id = $1 RETURNING {PARTNER_COLUMNS}",
        partner_id,
        *(changes[name] for name in assigned),
    )
    partner = _partner(row)
    assert partner is not None
    return partner


async def change_status(
    connection: asyncpg.Connection,
    partner_id: uuid.UUID,
    *,
    from_status: str | None,
    to_status: str,
    actor: str,
    reason: str,
) -> dict[str, Any]:
    row = await connection.fetchrow(
        f"UPDATE partners SET status = $2, version = version + 1, updated_at = now()"  # noqa: S608
        f" WHERE id = $1 RETURNING {PARTNER_COLUMNS}",
        partner_id,
        to_status,
    )
    await record_status(connection, partner_id, from_status, to_status, actor, reason)
    partner = _partner(row)
    assert partner is not None
    return partner


async def record_status(
    connection: asyncpg.Connection,
    partner_id: uuid.UUID,
    from_status: str | None,
    to_status: str,
    actor: str,
    reason: str,
) -> None:
    await connection.execute(
        """
        INSERT INTO partner_status_history (partner_id, from_status, to_status, actor, reason)
        VALUES ($1, $2, $3, $4, $5)
        """,
        partner_id,
        from_status,
        to_status,
        actor,
        reason,
    )


async def history(
    connection: asyncpg.Connection | asyncpg.Pool, partner_id: uuid.UUID
) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        """
        SELECT from_status, to_status, actor, reason, at FROM partner_status_history
        WHERE partner_id = $1 ORDER BY id
        """,
        partner_id,
    )
    return [dict(row) for row in rows]


# --- credentials --------------------------------------------------------------------------------


async def insert_client(
    connection: asyncpg.Connection | asyncpg.Pool,
    *,
    client_id: str,
    partner_id: uuid.UUID,
    name: str,
    secret_hash: str,
) -> dict[str, Any]:
    row = await connection.fetchrow(
        """
        INSERT INTO api_clients (client_id, partner_id, name, secret_hash) VALUES ($1, $2, $3, $4)
        RETURNING client_id, name, created_at, last_used_at, revoked_at
        """,
        client_id,
        partner_id,
        name,
        secret_hash,
    )
    return dict(row)


async def clients_of(
    connection: asyncpg.Connection | asyncpg.Pool, partner_id: uuid.UUID
) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        """
        SELECT client_id, name, created_at, last_used_at, revoked_at FROM api_clients
        WHERE partner_id = $1 ORDER BY created_at
        """,
        partner_id,
    )
    return [dict(row) for row in rows]


async def revoke_client(
    connection: asyncpg.Connection | asyncpg.Pool, partner_id: uuid.UUID, client_id: str
) -> bool:
    result: str = await connection.execute(
        """
        UPDATE api_clients SET revoked_at = coalesce(revoked_at, now())
        WHERE partner_id = $1 AND client_id = $2
        """,
        partner_id,
        client_id,
    )
    return result.endswith(" 1")


async def client_for_token(
    connection: asyncpg.Connection | asyncpg.Pool, client_id: str
) -> asyncpg.Record | None:
    """A live client with its partner's status and kind."""
    return await connection.fetchrow(
        """
        SELECT c.client_id, c.secret_hash, c.partner_id, p.status, p.kind
        FROM api_clients c JOIN partners p ON p.id = c.partner_id
        WHERE c.client_id = $1 AND c.revoked_at IS NULL
        """,
        client_id,
    )


async def touch_client(connection: asyncpg.Connection | asyncpg.Pool, client_id: str) -> None:
    await connection.execute(
        "UPDATE api_clients SET last_used_at = now() WHERE client_id = $1", client_id
    )


async def staff_by_email(
    connection: asyncpg.Connection | asyncpg.Pool, email: str
) -> asyncpg.Record | None:
    return await connection.fetchrow(
        "SELECT id, password_hash, roles, departements, national FROM staff_accounts"
        " WHERE email = lower($1) AND disabled_at IS NULL",
        email,
    )


async def upsert_staff(
    connection: asyncpg.Connection | asyncpg.Pool,
    *,
    email: str,
    password_hash: str,
    roles: list[str],
    departements: list[str],
    national: bool,
) -> uuid.UUID:
    """Create the account, or reset its password, roles and territory (``domain.staff_territory``
    says what a territory may be; the table's CHECK holds the format)."""
    staff_id: uuid.UUID = await connection.fetchval(
        """
        INSERT INTO staff_accounts (id, email, password_hash, roles, departements, national)
        VALUES ($1, lower($2), $3, $4, $5, $6)
        ON CONFLICT (email) DO UPDATE SET password_hash = EXCLUDED.password_hash,
                                          roles = EXCLUDED.roles,
                                          departements = EXCLUDED.departements,
                                          national = EXCLUDED.national, disabled_at = NULL
        RETURNING id
        """,
        uuid.uuid4(),
        email,
        password_hash,
        roles,
        departements,
        national,
    )
    return staff_id


# --- registration access tokens -----------------------------------------------------------------


async def replace_registration_token(
    connection: asyncpg.Connection,
    partner_id: uuid.UUID,
    *,
    token_hash: str,
    issued_by: str,
    issued_at: datetime,
    expires_at: datetime,
) -> None:
    """The partner's one live registration access token becomes this one (the previous one, if
    any, stops working)."""
    await connection.execute(
        """
        INSERT INTO registration_tokens
            (partner_id, token_hash, issued_by, issued_at, expires_at, used_up_at)
        VALUES ($1, $2, $3, $4, $5, NULL)
        ON CONFLICT (partner_id) DO UPDATE SET
            token_hash = EXCLUDED.token_hash, issued_by = EXCLUDED.issued_by,
            issued_at = EXCLUDED.issued_at, expires_at = EXCLUDED.expires_at, used_up_at = NULL
        """,
        partner_id,
        token_hash,
        issued_by,
        issued_at,
        expires_at,
    )


async def partner_of_registration_token(
    connection: asyncpg.Connection | asyncpg.Pool, token_hash: str, now: datetime
) -> uuid.UUID | None:
    """The partner whose live (unexpired, unused) registration access token has this hash."""
    partner_id: uuid.UUID | None = await connection.fetchval(
        """
        SELECT partner_id FROM registration_tokens
        WHERE token_hash = $1 AND expires_at > $2 AND used_up_at IS NULL
        """,
        token_hash,
        now,
    )
    return partner_id


async def use_up_registration_token(
    connection: asyncpg.Connection | asyncpg.Pool, partner_id: uuid.UUID, now: datetime
) -> None:
    await connection.execute(
        "UPDATE registration_tokens SET used_up_at = $2 WHERE partner_id = $1", partner_id, now
    )


# --- school claims (lock order: the claiming partner, then its rivals by id) ---------------------


@dataclass(frozen=True)
class SchoolClaim:
    id: uuid.UUID
    partner_id: uuid.UUID
    uai: str
    mailbox: str
    code_hash: str
    attempts: int
    expires_at: datetime


async def insert_school_claim(
    connection: asyncpg.Connection,
    *,
    claim_id: uuid.UUID,
    partner_id: uuid.UUID,
    uai: str,
    mailbox: str,
    code_hash: str,
    created_at: datetime,
    expires_at: datetime,
) -> None:
    await connection.execute(
        """
        INSERT INTO school_claims
            (id, partner_id, uai, mailbox, code_hash, created_at, expires_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        """,
        claim_id,
        partner_id,
        uai,
        mailbox,
        code_hash,
        created_at,
        expires_at,
    )


async def open_school_claim(
    connection: asyncpg.Connection, partner_id: uuid.UUID, *, for_update: bool = False
) -> SchoolClaim | None:
    """The partner's newest claim still open (not proven, nor closed)."""
    lock = " FOR UPDATE" if for_update else ""
    row = await connection.fetchrow(
        f"""
        SELECT id, partner_id, uai, mailbox, code_hash, attempts, expires_at FROM school_claims
        WHERE partner_id = $1 AND closed_at IS NULL ORDER BY created_at DESC LIMIT 1{lock}
        """,  # noqa: S608
        partner_id,
    )
    return SchoolClaim(**dict(row)) if row else None


async def count_failed_attempt(connection: asyncpg.Connection, claim_id: uuid.UUID) -> int:
    """One more wrong code for the claim; the attempts so far."""
    attempts: int = await connection.fetchval(
        "UPDATE school_claims SET attempts = attempts + 1 WHERE id = $1 RETURNING attempts",
        claim_id,
    )
    return attempts


async def close_school_claims(
    connection: asyncpg.Connection, partner_id: uuid.UUID, *, now: datetime, proven: bool
) -> None:
    """Close every open claim of the partner (``proven``: the code came back)."""
    await connection.execute(
        """
        UPDATE school_claims
        SET closed_at = $2::timestamptz, proven_at = CASE WHEN $3 THEN $2::timestamptz END
        WHERE partner_id = $1 AND closed_at IS NULL
        """,
        partner_id,
        now,
        proven,
    )


async def pending_rivals(
    connection: asyncpg.Connection, uai: str, partner_id: uuid.UUID
) -> list[dict[str, Any]]:
    """The other pending registrations of the same UAI, locked in id order."""
    rows = await connection.fetch(
        f"SELECT {PARTNER_COLUMNS} FROM partners"  # noqa: S608
        " WHERE uai = $1 AND id <> $2 AND status = 'pending' ORDER BY id FOR UPDATE",
        uai,
        partner_id,
    )
    return [p for p in map(_partner, rows) if p is not None]
