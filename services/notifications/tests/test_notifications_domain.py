from datetime import timedelta

from maillage.notifications.domain import DEFAULT_RETRY_SCHEDULE


def test_the_default_schedule_spans_the_standard_webhooks_retry_window() -> None:
    assert DEFAULT_RETRY_SCHEDULE[0] == timedelta(0)
    assert len(DEFAULT_RETRY_SCHEDULE) == 8
    assert sum(DEFAULT_RETRY_SCHEDULE, timedelta()) == timedelta(hours=27, minutes=35, seconds=5)
