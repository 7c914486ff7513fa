"""Retries, Retry-After, disabling failing endpoints and what a response means."""

import random
from datetime import UTC, datetime, timedelta

import pytest

from maillage.notifications.domain import (
    DEFAULT_RETRY_SCHEDULE,
    MAX_RETRY_AFTER,
    classify_response,
    next_attempt,
    parse_retry_after,
    should_disable,
    warn_before_disable,
)

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_the_first_attempt_is_at_once_without_jitter() -> None:
    assert next_attempt(0, NOW, rng=random.Random(1)) == NOW


@pytest.mark.parametrize("attempt", range(1, 8))
def test_each_retry_follows_the_schedule_within_ten_percent(attempt: int) -> None:
    rng = random.Random(20260302)
    nominal = DEFAULT_RETRY_SCHEDULE[attempt]
    delays = []
    for _ in range(500):
        due = next_attempt(attempt, NOW, rng=rng)
        assert due is not None
        delays.append(due - NOW)
    assert all(nominal * 0.9 <= d <= nominal * 1.1 for d in delays)
    # It is jitter, not a constant offset: both sides of the nominal delay are used, widely.
    assert min(delays) < nominal * 0.95
    assert max(delays) > nominal * 1.05


def test_a_seeded_rng_gives_the_same_schedule() -> None:
    first = [next_attempt(n, NOW, rng=random.Random(7)) for n in range(8)]
    again = [next_attempt(n, NOW, rng=random.Random(7)) for n in range(8)]
    assert first == again


def test_the_schedule_is_exhausted_after_the_eighth_attempt() -> None:
    rng = random.Random(3)
    now, attempts = NOW, 0
    while (due := next_attempt(attempts, now, rng=rng)) is not None:
        attempts += 1
        now = due
    assert attempts == 8
    # The whole window is the schedule's 27 h 35 min 5 s, give or take the jitter.
    nominal = sum(DEFAULT_RETRY_SCHEDULE, timedelta())
    assert nominal * 0.9 <= now - NOW <= nominal * 1.1
    assert next_attempt(8, NOW, rng=rng) is None
    assert next_attempt(9, NOW, rng=rng) is None
    with pytest.raises(ValueError, match="not negative"):
        next_attempt(-1, NOW, rng=rng)


def test_a_custom_schedule() -> None:
    schedule = (timedelta(0), timedelta(seconds=1))
    assert next_attempt(0, NOW, schedule=schedule, rng=random.Random(0)) == NOW
    due = next_attempt(1, NOW, schedule=schedule, rng=random.Random(0))
    assert due is not None
    assert timedelta(seconds=0.9) <= due - NOW <= timedelta(seconds=1.1)
    assert next_attempt(2, NOW, schedule=schedule, rng=random.Random(0)) is None


def test_a_later_retry_after_wins_and_an_earlier_one_does_not() -> None:
    rng = random.Random(5)
    # After the 1st failure the schedule says ~5 s; the receiver asks for 2 minutes.
    assert next_attempt(1, NOW, retry_after=timedelta(minutes=2), rng=rng) == NOW + timedelta(
        minutes=2
    )
    # After the 3rd failure the schedule says ~30 min; a 10 s Retry-After does not hasten it.
    due = next_attempt(3, NOW, retry_after=timedelta(seconds=10), rng=rng)
    assert due is not None
    assert due - NOW >= timedelta(minutes=27)
    # Even the "at once" slot waits for a Retry-After.
    assert next_attempt(0, NOW, retry_after=timedelta(seconds=30), rng=rng) == NOW + timedelta(
        seconds=30
    )


def test_a_huge_retry_after_is_capped_and_cannot_outlive_the_schedule() -> None:
    rng = random.Random(5)
    assert next_attempt(1, NOW, retry_after=timedelta(days=365), rng=rng) == NOW + MAX_RETRY_AFTER
    assert next_attempt(8, NOW, retry_after=timedelta(seconds=1), rng=rng) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", timedelta(seconds=120)),
        (" 0 ", timedelta(0)),
        ("Mon, 02 Mar 2026 09:05:00 GMT", timedelta(minutes=5)),
        ("Mon, 02 Mar 2026 08:00:00 GMT", timedelta(0)),  # in the past: at once
        ("99999999999999999999", timedelta(days=366)),
        ("-5", None),
        ("soon", None),
        ("²", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_headers_are_parsed(header: str | None, expected: timedelta | None) -> None:
    assert parse_retry_after(header, NOW) == expected


def test_an_endpoint_failing_for_five_days_is_disabled() -> None:
    first = NOW
    assert not should_disable(None, NOW)
    assert not should_disable(first, first + timedelta(days=4, hours=23, minutes=59))
    assert should_disable(first, first + timedelta(days=5))
    assert should_disable(first, first + timedelta(days=6))
    assert not should_disable(first, first + timedelta(days=5), after=timedelta(days=7))


def test_the_partner_is_warned_a_day_before() -> None:
    first = NOW
    assert not warn_before_disable(None, NOW)
    assert not warn_before_disable(first, first + timedelta(days=3, hours=23))
    assert warn_before_disable(first, first + timedelta(days=4))
    assert warn_before_disable(first, first + timedelta(days=4, hours=23))
    # From the fifth day it is the "disabled" e-mail, not the warning.
    assert not warn_before_disable(first, first + timedelta(days=5))
    assert warn_before_disable(
        first, first + timedelta(hours=13), after=timedelta(hours=24), ahead=timedelta(hours=12)
    )


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "delivered"),
        (201, "delivered"),
        (202, "delivered"),
        (204, "delivered"),
        (299, "delivered"),
        (410, "disable"),
        (408, "retry"),
        (429, "retry"),
        (500, "retry"),
        (502, "retry"),
        (503, "retry"),
        (504, "retry"),
        (400, "retry"),
        (401, "retry"),
        (403, "retry"),
        (404, "retry"),
        (413, "retry"),
        (301, "retry"),
        (302, "retry"),
        (307, "retry"),
        (100, "retry"),
    ],
)
def test_responses_are_classified(status: int, outcome: str) -> None:
    assert classify_response(status) == outcome
