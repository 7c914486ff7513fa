"""Pure rules of notifications: no I/O, no framework.

Webhooks follow the Standard Webhooks specification; a failed delivery is retried on a schedule
and an endpoint failing for days is disabled.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Literal

# Standard Webhooks' recommended schedule: at once, then these delays after each failure.
DEFAULT_RETRY_SCHEDULE: tuple[timedelta, ...] = (
    timedelta(0),
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)

# Every non-zero delay moves by up to ±10 %, so endpoints failing together do not retry together.
JITTER = 0.10
# A receiver's Retry-After is honoured up to this: a year-long Retry-After would silently park
# the event outside the retry window.
MAX_RETRY_AFTER = timedelta(hours=10)
# An endpoint failing without a single success for this long is disabled…
DEFAULT_DISABLE_AFTER = timedelta(days=5)
# …and its partner is warned by e-mail this long before.
DEFAULT_WARN_AHEAD = timedelta(days=1)

# Jitter is not security: a plain PRNG is right (tests pass a seeded one).
_JITTER_RNG = random.Random()  # noqa: S311

Outcome = Literal["delivered", "retry", "disable"]


def next_attempt(
    attempt_number: int,
    now: datetime,
    *,
    schedule: tuple[timedelta, ...] = DEFAULT_RETRY_SCHEDULE,
    retry_after: timedelta | None = None,
    max_retry_after: timedelta = MAX_RETRY_AFTER,
    rng: random.Random | None = None,
) -> datetime | None:
    """When the next attempt is due, or None when the schedule is exhausted.

    ``attempt_number`` is the number of the attempt that just failed (1 for the first one; 0 asks
    when the first attempt is due). Attempt ``n + 1`` is due ``schedule[n]`` after ``now``, moved
    by a random ±10 % unless the delay is zero; with 8 delays there are 8 attempts in all. A
    ``Retry-After`` from the receiver (capped at ``max_retry_after``) wins when it is later.
    """
    if attempt_number < 0:
        raise ValueError("an attempt number is not negative")
    if attempt_number >= len(schedule):
        return None
    delay = schedule[attempt_number]
    if delay > timedelta(0):
        delay *= 1 + (rng or _JITTER_RNG).uniform(-JITTER, JITTER)
    if retry_after is not None:
        delay = max(delay, min(retry_after, max_retry_after))
    return now + delay


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """A ``Retry-After`` header (delta-seconds or HTTP-date) as a delay; None when absent or bad."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        # Clamped far below timedelta's limits: next_attempt caps it anyway.
        return timedelta(seconds=min(int(text), 366 * 24 * 3600))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is GMT
        when = when.replace(tzinfo=UTC)
    return max(when - now, timedelta(0))


def should_disable(
    first_failure_at: datetime | None,
    now: datetime,
    *,
    after: timedelta = DEFAULT_DISABLE_AFTER,
) -> bool:
    """Whether an endpoint failing since ``first_failure_at`` (None: healthy) is disabled now.

    ``first_failure_at`` is the first failed attempt since the endpoint's last success.
    """
    return first_failure_at is not None and now - first_failure_at >= after


def warn_before_disable(
    first_failure_at: datetime | None,
    now: datetime,
    *,
    after: timedelta = DEFAULT_DISABLE_AFTER,
    ahead: timedelta = DEFAULT_WARN_AHEAD,
) -> bool:
    """Whether the partner is due the "your endpoint will be disabled" e-mail now.

    True from ``ahead`` before the endpoint would be disabled until it is; the caller records that
    the warning was sent, so it goes once per failure streak.
    """
    if first_failure_at is None:
        return False
    failing_for = now - first_failure_at
    return max(after - ahead, timedelta(0)) <= failing_for < after


def classify_response(status_code: int) -> Outcome:
    """What a receiver's HTTP status means for the delivery.

    * 2xx: delivered.
    * 410 Gone: the receiver says the endpoint no longer exists: disable it, stop retrying.
    * anything else, retried: 408, 429 and 5xx are transient by definition; other 4xx (400, 401,
      403, 404…) are retried too, because Standard Webhooks counts every non-2xx as a failure and
      they are usually a receiver's deployment or configuration mistake (a wrong route or a
      rotated secret) that gets fixed within the retry window; an endpoint that never recovers is
      disabled after :data:`DEFAULT_DISABLE_AFTER`. 3xx is a failure as well: redirects are not
      followed (SSRF), and 1xx is never a final answer.
    """
    if 200 <= status_code <= 299:
        return "delivered"
    if status_code == 410:
        return "disable"
    return "retry"
