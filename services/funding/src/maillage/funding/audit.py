"""The audit log nobody can rewrite (docs/architecture.md, decision 47).

1. Every decision of a use case (who, with which role, what, the object's state before and
   after, when, the request id and the trace id) is appended by :func:`record`, inside the
   decision's own transaction: the decision and its audit row commit together or not at all.
2. :func:`record` locks the single ``audit_head`` row (last in the lock order), numbers the row
   after the head and computes its hash: SHA-256 of the previous row's hash, a newline, and the
   row's canonical JSON (:func:`canonical`: sorted keys, no spaces, UTF-8). The first row's
   previous hash is 64 zeros.
3. The database refuses UPDATE, DELETE and TRUNCATE on ``audit_log`` (a trigger, for every
   role, the owner included); only someone able to disable triggers (a superuser) can alter a
   row, and then :func:`verify` finds it.
4. :func:`verify` (``maillage funding verify-audit``) reads the rows in order, by batches, and
   recomputes the chain; it names the first row whose hash, previous hash or sequence does not
   follow, and checks the head against the last row (a removed tail is seen too).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from opentelemetry import trace

from maillage.common.auth import Caller
from maillage.funding import store

GENESIS = "0" * 64
CHAINED = (
    "seq",
    "at",
    "actor",
    "role",
    "action",
    "object_type",
    "object_id",
    "before",
    "after",
    "request_id",
    "trace_id",
)


def canonical(row: Mapping[str, Any]) -> str:
    """The text a row's hash covers: its chained fields as sorted, compact JSON."""
    fields = {name: row[name] for name in CHAINED}
    fields["at"] = row["at"].astimezone(UTC).isoformat()
    fields["object_id"] = str(row["object_id"])
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(previous_hash: str, row: Mapping[str, Any]) -> str:
    return hashlib.sha256(f"{previous_hash}\n{canonical(row)}".encode()).hexdigest()


def acting_role(caller: Caller, role: str | None) -> str:
    """The role an action was taken in: the one it needs, or the caller's kind."""
    if role is not None:
        return role
    return "partner" if caller.partner_id else ",".join(sorted(caller.roles)) or "none"


def _json_safe(state: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if state is None:
        return None
    return json.loads(json.dumps(dict(state), default=str))


def _trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


async def record(
    connection: asyncpg.Connection,
    *,
    caller: Caller,
    role: str | None,
    action: str,
    object_type: str,
    object_id: uuid.UUID,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    """Append one decision to the chain, in the caller's transaction. Returns the row."""
    if not connection.is_in_transaction():
        raise RuntimeError("audit.record() belongs inside the decision's transaction")
    last_seq, last_hash = await store.lock_audit_head(connection)
    row: dict[str, Any] = {
        "seq": last_seq + 1,
        "at": now.astimezone(UTC),
        "actor": caller.subject,
        "role": acting_role(caller, role),
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "before": _json_safe(before),
        "after": _json_safe(after),
        "request_id": structlog.contextvars.get_contextvars().get("request_id"),
        "trace_id": _trace_id(),
        "previous_hash": last_hash,
    }
    row["hash"] = chain_hash(last_hash, row)
    await store.append_audit(connection, row)
    return row


@dataclass(frozen=True)
class Verification:
    rows: int
    first_bad_seq: int | None
    reason: str | None

    @property
    def intact(self) -> bool:
        return self.first_bad_seq is None


async def verify_rows(
    rows: AsyncIterator[Mapping[str, Any]], head: tuple[int, str]
) -> Verification:
    """Recompute the chain over ``rows`` (in sequence order) and compare the end with ``head``."""
    previous, expected_seq, count = GENESIS, 1, 0
    async for row in rows:
        count += 1
        seq = int(row["seq"])
        if seq != expected_seq:
            return Verification(count, seq, f"sequence {expected_seq} is missing")
        if row["previous_hash"] != previous:
            return Verification(count, seq, "its previous hash is not the previous row's hash")
        if chain_hash(previous, row) != row["hash"]:
            return Verification(count, seq, "its content does not match its hash")
        previous, expected_seq = str(row["hash"]), seq + 1
    last_seq, last_hash = head
    if (last_seq, last_hash) != (expected_seq - 1, previous):
        return Verification(count, expected_seq, "rows after this one were removed")
    return Verification(count, None, None)


async def verify(connection: asyncpg.Connection) -> Verification:
    """Verify the whole chain of the database behind ``connection``."""
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        head = await store.audit_head(connection)
        return await verify_rows(store.audit_rows(connection), head)
