"""Cursor pagination, the same in every service: lists are ordered by a time and the row's id,
and the cursor is where the previous page stopped (opaque to callers, checked when read)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Query

from maillage.common.problems import Problem

MAX_CURSOR_LENGTH = 200
"""Characters; the cursors we write are about 100 (a query parameter's documented maximum)."""

Cursor = Annotated[
    str | None,
    Query(
        max_length=MAX_CURSOR_LENGTH,
        description="The `next_cursor` of the previous page; omit for the first page.",
    ),
]
"""A list route's ``cursor`` query parameter (400 ``invalid_cursor`` when not one of ours)."""

Position = tuple[datetime, uuid.UUID]
"""Where a page stopped: the last row's time and id (lists go on after it)."""


def encode_cursor(at: datetime, row_id: uuid.UUID | str) -> str:
    raw = json.dumps([at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> Position | None:
    """The position a cursor names; None for the first page. A cursor that is not one of ours
    is a 400 problem (``invalid_cursor``), never a 500."""
    if cursor is None:
        return None
    try:
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise ValueError("longer than any cursor we write")
        at, row_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None or moment.isoformat() != at:  # as encode_cursor writes it
            raise ValueError("a cursor's time is ISO 8601 with its offset")
        # In UTC, as PostgreSQL compares it: 9999-12-31T23:59:59-23:59 leaves the range here.
        return moment.astimezone(UTC), uuid.UUID(row_id)
    # uuid.UUID(7): AttributeError; thousands of nested "[": RecursionError.
    except (ValueError, TypeError, AttributeError, OverflowError, RecursionError) as error:
        raise Problem(
            400,
            "invalid_cursor",
            "Curseur non valide",
            detail="Reprenez le next_cursor d'une page.",
        ) from error


def page(rows: Sequence[dict[str, Any]], limit: int, at: str = "created_at") -> dict[str, Any]:
    """``{"items", "next_cursor"}`` from ``limit + 1`` rows read after the cursor's position."""
    items = list(rows[:limit])
    more = len(rows) > limit
    return {
        "items": items,
        "next_cursor": encode_cursor(items[-1][at], items[-1]["id"]) if more else None,
    }
