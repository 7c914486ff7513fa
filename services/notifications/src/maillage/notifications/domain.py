"""Pure rules of notifications: no I/O, no framework.

Webhooks follow the Standard Webhooks specification; a failed delivery is retried on a schedule
and an endpoint failing for days is disabled.
"""

from datetime import timedelta

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
