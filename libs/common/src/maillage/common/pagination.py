"""Cursor pagination, the same in every service: lists are ordered by a time and the row's id,
and the cursor is where the previous page stopped (opaque to callers, checked when read)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from maillage.common.problems import Problem

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
        at, row_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None:
            raise ValueError("a cursor's time has its offset")
        return moment, uuid.UUID(row_id)
    except (ValueError, TypeError, AttributeError) as error:  # uuid.UUID(7): AttributeError
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
