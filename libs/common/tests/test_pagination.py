"""Cursors go round trip, and anything else is a clear 400, never a 500."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest

from maillage.common.pagination import decode_cursor, encode_cursor, page
from maillage.common.problems import Problem

ID = str(uuid.UUID(int=1)).encode()


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
        # Times that leave the datetime range once in UTC (issue 16 §4).
        base64.urlsafe_b64encode(b'["9999-12-31T23:59:59-23:59", "%s"]' % ID).decode(),
        base64.urlsafe_b64encode(b'["0001-01-01T00:00:00+23:59", "%s"]' % ID).decode(),
        base64.urlsafe_b64encode(b"[" * 3000).decode(),  # Python's recursion limit
        base64.urlsafe_b64encode(b'["2026-11-21T10:00:00\\u0000+00:00", "%s"]' % ID).decode(),
        base64.urlsafe_b64encode(b'["\\ud800", "%s"]' % ID).decode(),
        "A" * 10_000,
    ],
)
def test_anything_else_is_an_invalid_cursor_problem(cursor: str) -> None:
    with pytest.raises(Problem) as refused:
        decode_cursor(cursor)
    assert (refused.value.status, refused.value.code) == (400, "invalid_cursor")


def test_a_cursor_is_read_in_utc() -> None:
    at = datetime.fromisoformat("2026-11-21T10:00:00+05:00")
    position = decode_cursor(encode_cursor(at, uuid.UUID(int=1)))
    assert position is not None
    assert position[0] == at
    assert position[0].tzinfo == UTC
