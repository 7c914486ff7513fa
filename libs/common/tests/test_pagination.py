"""Cursors go round trip, and anything else is a clear 400, never a 500."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest

from maillage.common.pagination import decode_cursor, encode_cursor, page
from maillage.common.problems import Problem


def test_a_cursor_names_where_the_page_stopped() -> None:
    rows = [
        {"id": uuid.uuid4(), "created_at": datetime(2026, 11, n, tzinfo=UTC)} for n in (1, 2, 3)
    ]
    first = page(rows, 2)
    assert first["items"] == rows[:2]
    assert decode_cursor(first["next_cursor"]) == (rows[1]["created_at"], rows[1]["id"])
    assert page(rows[:2], 2)["next_cursor"] is None
    assert decode_cursor(None) is None


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64 !",
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        base64.urlsafe_b64encode(b'["2026-11-21T10:00:00", "x"]').decode(),
        encode_cursor(datetime(2026, 11, 21), uuid.UUID(int=1)),  # no offset
        base64.urlsafe_b64encode(b'["2026-11-21T10:00:00+00:00", 7]').decode(),
    ],
)
def test_anything_else_is_an_invalid_cursor_problem(cursor: str) -> None:
    with pytest.raises(Problem) as refused:
        decode_cursor(cursor)
    assert (refused.value.status, refused.value.code) == (400, "invalid_cursor")
