"""The envelope is read exactly as CloudEvents 1.0 and RFC 3339 allow: no more, no less."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maillage.common.events import Envelope
from maillage.common.kafka_envelope import EnvelopeError, parse_timestamp, read_attributes

EVENT_ID = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"


def headers(**changes: bytes | None) -> list[tuple[str, bytes | None]]:
    base: dict[str, bytes | None] = {
        "ce_specversion": b"1.0",
        "ce_id": EVENT_ID.encode(),
        "ce_source": b"/maillage/registry",
        "ce_type": b"fr.maillage.registry.school.referenced.v1",
        "ce_time": b"2026-11-21T10:00:00Z",
        "ce_subject": b"0940123Y",
        "content-type": b"application/json",
    }
    base.update({name.replace("__", "-"): value for name, value in changes.items()})
    return [(name, value) for name, value in base.items() if value != b"DROP"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, 999_999, UTC)),
        ("2017-01-01T00:59:60+01:00", datetime(2016, 12, 31, 23, 59, 59, 999_999, UTC)),
        ("2026-11-21t10:00:00z", datetime(2026, 11, 21, 10, tzinfo=UTC)),
        ("2026-11-21T10:00:00-00:00", datetime(2026, 11, 21, 10, tzinfo=UTC)),
        ("2026-11-21T10:00:00.123456789+02:00", datetime(2026, 11, 21, 8, 0, 0, 123456, UTC)),
        ("2024-02-29T00:00:00Z", datetime(2024, 2, 29, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
    ],
)
def test_rfc3339_date_times_are_read_whatever_their_spelling(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("2026-11-21T10:00:00", "not an RFC 3339 date-time"),  # no offset
        ("2026-11-21 10:00:00Z", "not an RFC 3339 date-time"),
        ("2026-11-21", "not an RFC 3339 date-time"),
        ("20261121T100000Z", "not an RFC 3339 date-time"),
        ("2026-11-21T10:00Z", "not an RFC 3339 date-time"),
        ("2026-11-21T10:00:00.Z", "not an RFC 3339 date-time"),
        ("2026-11-21T10:00:00+0100", "not an RFC 3339 date-time"),
        ("２０26-11-21T10:00:00Z", "not an RFC 3339 date-time"),  # non-ASCII digits
        ("2023-02-29T00:00:00Z", "does not exist"),
        ("2026-13-01T00:00:00Z", "does not exist"),
        ("2026-11-21T24:00:00Z", "does not exist"),
        ("2026-11-21T10:00:61Z", "does not exist"),
        ("2016-12-31T22:59:60Z", "leap second"),
        ("2016-12-31T23:59:60+01:00", "leap second"),
        ("2026-11-21T10:00:00+24:00", "offset that does not exist"),
        ("0000-06-01T00:00:00Z", "year 0000"),
        ("0001-01-01T00:00:00+01:00", "cannot be represented"),
        ("9999-12-31T23:00:00-02:00", "cannot be represented"),
    ],
)
def test_what_rfc3339_does_not_allow_is_refused(text: str, why: str) -> None:
    with pytest.raises(EnvelopeError, match=why):
        parse_timestamp(text)


@given(
    st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)),
    st.integers(-23 * 60 - 59, 23 * 60 + 59),
)
def test_any_instant_written_in_rfc3339_reads_back(moment: datetime, minutes: int) -> None:
    aware = moment.replace(tzinfo=timezone(timedelta(minutes=minutes)))
    assert parse_timestamp(aware.isoformat()) == aware


def test_the_envelope_maillage_writes_reads_back() -> None:
    envelope = Envelope(
        uuid.uuid4(),
        "fr.maillage.registry.school.referenced.v1",
        "/maillage/registry",
        "x",
        datetime(2026, 11, 21, 10, 0, 0, 5, UTC),
    )
    raw = [(name, value.encode()) for name, value in envelope.headers().items()]
    assert Envelope.from_headers(raw) == envelope


def test_extensions_and_other_headers_are_kept_apart() -> None:
    attributes, others = read_attributes(
        [*headers(), ("ce_partitionkey", b"k"), ("traceparent", b"00-x"), ("traceparent", b"2")]
    )
    assert attributes["partitionkey"] == "k"
    assert attributes["datacontenttype"] == "application/json"
    assert others == {"traceparent": "00-x"}


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (headers(ce_id=b"DROP"), "no ce_id header"),
        (headers(ce_specversion=b"DROP", ce_source=b"DROP"), "no ce_specversion, ce_source"),
        (headers(ce_id=b""), "ce_id is empty"),
        (headers(ce_type=b""), "ce_type is empty"),
        (headers(ce_subject=b""), "ce_subject is empty"),
        (headers(ce_specversion=b"0.3"), "reads CloudEvents 1.0"),
        (headers(ce_source=b"a source"), "not a URI-reference"),
        (headers(ce_source=b"/x%zz"), "not a URI-reference"),
        (headers(ce_dataschema=b"/relative"), "not an absolute URI"),
        (headers(ce_subject=b"a\x00b"), "U\\+0000"),
        (headers(ce_subject="a\u0085b".encode()), "U\\+0085"),
        (headers(ce_subject="\ufdd0".encode()), "U\\+FDD0"),
        (headers(ce_time=b"2026-11-21T10:00:00"), "not an RFC 3339 date-time"),
        (headers(content__type=b"json"), "not a media type"),
        (headers(content__type=b"application/cloudevents+json"), "structured content mode"),
        (headers(ce_subject=None), "'ce_subject' has a null value"),
        (headers(ce_subject=b"\xc3\x28"), "'ce_subject' is not UTF-8 \\(byte 0xc3 at 0\\)"),
        ([*headers(), ("x-legacy", b"\xc3\x28")], "'x-legacy' is not UTF-8"),
        ([*headers(), ("x-legacy", None)], "'x-legacy' has a null value"),
        ([*headers(), ("ce_id", EVENT_ID.encode())], "'ce_id' is given more than once"),
        ([*headers(), ("content-type", b"application/json")], "'content-type' is given more"),
        ([*headers(), ("ce_traceId", b"x")], "'ce_traceId' is not a CloudEvents attribute"),
        ([*headers(), ("ce_x-y", b"x")], "'ce_x-y' is not a CloudEvents attribute"),
        ([*headers(), ("ce_", b"x")], "'ce_' is not a CloudEvents attribute"),
    ],
)
def test_what_cloudevents_does_not_allow_is_refused(
    raw: list[tuple[str, bytes | None]], why: str
) -> None:
    with pytest.raises(EnvelopeError, match=why):
        read_attributes(raw)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (headers(ce_id=b"1234-1234-1234"), "a Maillage event id is a UUID"),
        (headers(ce_time=b"DROP"), "no ce_time header"),
        (headers(content__type=b"text/plain"), "Maillage event data is JSON"),
        (headers(ce_source=b"/maillage/cordees"), "does not publish"),
    ],
)
def test_valid_cloudevents_that_are_not_maillage_events_are_refused(
    raw: list[tuple[str, bytes | None]], why: str
) -> None:
    read_attributes(raw)  # a CloudEvent...
    with pytest.raises(EnvelopeError, match=why):
        Envelope.from_headers(raw)  # ...but not a Maillage event


def test_what_cloudevents_allows_beyond_what_maillage_writes_is_read() -> None:
    envelope = Envelope.from_headers(
        [
            *headers(
                ce_time=b"2016-12-31T23:59:60Z",
                ce_subject=b"DROP",
                content__type=b"Application/JSON; charset=utf-8",
            ),
            ("ce_averyveryverylongextensionname", b"kept"),  # longer than 20: a SHOULD only
            ("ce_dataschema", b"https://example.org/s.json"),
            ("x-anything", "é".encode()),
        ]
    )
    assert envelope.time == datetime(2016, 12, 31, 23, 59, 59, 999_999, UTC)
    assert envelope.subject == ""
