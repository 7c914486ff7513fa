"""Reading the CloudEvents attributes of a raw Kafka record, exactly as the specifications say.

A consumer gets whatever a producer put in a record: headers of any bytes (or none, or null),
names given twice, attributes Maillage never writes. :func:`read_attributes` reads them from the
record's raw header pairs and either returns the attributes or raises :class:`EnvelopeError`
naming the header and the rule it breaks; it never raises anything else, so one record can never
stop the others of its batch.

The rules, each from its source:

- Kafka protocol binding (binary content mode), 3.2.3: every header key and value is a UTF-8
  string, so a header that is not (a null value, bytes that are not UTF-8) makes the record
  unreadable, whichever header it is; attributes are the ``ce_``-prefixed headers and
  ``content-type`` is ``datacontenttype``. A ``content-type`` starting with
  ``application/cloudevents`` is the structured mode, which Maillage does not produce or read.
- CloudEvents 1.0, "Attribute Naming Convention": an attribute name is lower-case ASCII letters
  and digits (``ce_traceId``, ``ce_x-y`` and a bare ``ce_`` are not attributes); the 20-character
  limit is a SHOULD and is not enforced.
- CloudEvents 1.0, "Type System": a String holds no control character (U+0000-U+001F,
  U+007F-U+009F) and no noncharacter; a URI-reference follows RFC 3986; a Timestamp is an
  RFC 3339 ``date-time``.
- CloudEvents 1.0, "Context Attributes": ``specversion``, ``id``, ``source`` and ``type`` are
  required and non-empty; ``source`` is a URI-reference; ``subject``, when present, is non-empty;
  ``time`` is a Timestamp; ``dataschema`` is an absolute URI; ``datacontenttype`` follows
  RFC 2046 (``type/subtype`` and parameters).
- One value per attribute: the same attribute given twice is ambiguous, so refused.

RFC 3339 allows a leap second (``2016-12-31T23:59:60Z``), which Python's ``datetime`` cannot
hold: it is read as the last microsecond of the minute (``23:59:59.999999``), which keeps the
order of events. A second of 60 is accepted only at 23:59 UTC, where leap seconds are inserted.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone

from rfc3986_validator import validate_rfc3986

PREFIX = "ce_"
CONTENT_TYPE_HEADER = "content-type"
REQUIRED = ("specversion", "id", "source", "type")

RawHeaders = Iterable[tuple[str, bytes | None]]

_NAME = re.compile(r"^[a-z0-9]+$")
# RFC 3339, section 5.6 (date-time), with the lower-case "t" and "z" that section 5.6 allows.
_DATE_TIME = re.compile(
    r"^(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})[Tt]"
    r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]+))?"
    r"(?P<offset>[Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
# RFC 2046 / RFC 9110 media type: a type, a subtype, then parameters we do not need to read.
_MEDIA_NAME = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(rf"^{_MEDIA_NAME}/{_MEDIA_NAME}\s*(?:;.*)?$", re.DOTALL)
_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# CloudEvents "Type System", String: characters that MUST NOT appear.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ufdd0-\ufdef\ufffe\uffff]")


class EnvelopeError(ValueError):
    """The record is not a CloudEvent Maillage can read; the message says which header and why."""


def read_attributes(raw: RawHeaders) -> tuple[dict[str, str], dict[str, str]]:
    """The record's CloudEvents attributes (``id``, ``type``, ``datacontenttype``...) and its
    other headers as text (``traceparent``...; the first value of a name given twice).

    Raises :class:`EnvelopeError` when a header is not UTF-8 text, an attribute is given twice,
    has an invalid name or value, or a required one is missing.
    """
    attributes: dict[str, str] = {}
    others: dict[str, str] = {}
    for name, value in raw:
        text = _text(name, value)
        if name == CONTENT_TYPE_HEADER:
            attribute = "datacontenttype"
        elif name.startswith(PREFIX):
            attribute = name[len(PREFIX) :]
            if not _NAME.match(attribute):
                raise EnvelopeError(
                    f"header {name!r} is not a CloudEvents attribute: attribute names are "
                    "lower-case ASCII letters and digits"
                )
        else:
            others.setdefault(name, text)
            continue
        if attribute in attributes:
            raise EnvelopeError(f"header {name!r} is given more than once")
        attributes[attribute] = text
    missing = [PREFIX + name for name in REQUIRED if name not in attributes]
    if missing:
        raise EnvelopeError(f"not a CloudEvent: no {', '.join(missing)} header")
    for attribute, text in attributes.items():
        _check(attribute, text)
    return attributes, others


def _text(name: str, value: bytes | None) -> str:
    if value is None:
        raise EnvelopeError(f"header {name!r} has a null value; Kafka headers here are UTF-8 text")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as error:
        raise EnvelopeError(
            f"header {name!r} is not UTF-8 (byte {value[error.start]:#04x} at {error.start}); "
            "the CloudEvents Kafka binding requires UTF-8 header values"
        ) from None


def _check(attribute: str, text: str) -> None:
    header = CONTENT_TYPE_HEADER if attribute == "datacontenttype" else PREFIX + attribute
    if not text and (attribute in REQUIRED or attribute == "subject"):
        raise EnvelopeError(f"{header} is empty; CloudEvents requires a non-empty value")
    if forbidden := _FORBIDDEN.search(text):
        raise EnvelopeError(
            f"{header} contains U+{ord(forbidden.group()):04X}, which a CloudEvents String may "
            "not hold"
        )
    if attribute == "specversion" and text != "1.0":
        raise EnvelopeError(f"{header} is {text!r}; this consumer reads CloudEvents 1.0")
    if attribute == "source" and not validate_rfc3986(text, rule="URI_reference"):
        raise EnvelopeError(f"{header} {text!r} is not a URI-reference (RFC 3986)")
    if attribute == "dataschema" and not validate_rfc3986(text, rule="URI"):
        raise EnvelopeError(f"{header} {text!r} is not an absolute URI (RFC 3986)")
    if attribute == "time":
        parse_timestamp(text, header)
    if attribute == "datacontenttype":
        if not _MEDIA_TYPE.match(text):
            raise EnvelopeError(f"{header} {text!r} is not a media type (RFC 2046)")
        if text.lower().startswith("application/cloudevents"):
            raise EnvelopeError(
                f"{header} {text!r} is the structured content mode; Maillage events travel in "
                "binary mode"
            )


def parse_timestamp(text: str, header: str = "ce_time") -> datetime:
    """An RFC 3339 ``date-time`` as an aware datetime; a leap second reads as ``:59.999999``.

    Raises :class:`EnvelopeError` for anything RFC 3339 does not allow (no offset, a date that
    does not exist, hour 24, a leap second anywhere but at 23:59 UTC) and for years Python
    cannot hold (0000, or beyond 9999 once in UTC).
    """
    match = _DATE_TIME.match(text)
    if match is None:
        raise EnvelopeError(
            f"{header} {text!r} is not an RFC 3339 date-time (e.g. 2026-11-21T10:00:00Z)"
        )
    year, month, day = int(match["year"]), int(match["month"]), int(match["day"])
    hour, minute, second = int(match["hour"]), int(match["minute"]), int(match["second"])
    offset = _offset(match["offset"], text, header)
    if year == 0:
        raise EnvelopeError(f"{header} {text!r}: year 0000 cannot be represented")
    if not (
        1 <= month <= 12
        and 1 <= day <= (29 if month == 2 and calendar.isleap(year) else _DAYS[month - 1])
        and hour <= 23
        and minute <= 59
        and second <= 60
    ):
        raise EnvelopeError(f"{header} {text!r} names a date or time that does not exist")
    microsecond = int((match["fraction"] or "0")[:6].ljust(6, "0"))
    try:
        if second == 60:
            instant = datetime(year, month, day, hour, minute, 59, 999_999, tzinfo=offset)
            if instant.astimezone(UTC).strftime("%H:%M") != "23:59":
                raise EnvelopeError(
                    f"{header} {text!r}: a leap second (:60) only ends a UTC day (23:59:60Z)"
                )
            return instant
        instant = datetime(year, month, day, hour, minute, second, microsecond, tzinfo=offset)
        if year in (1, 9999):
            instant.astimezone(UTC)  # raises OverflowError beyond what datetime holds
        return instant
    except (OverflowError, ValueError) as error:
        raise EnvelopeError(f"{header} {text!r} cannot be represented: {error}") from None


def _offset(text: str, whole: str, header: str) -> timezone:
    if text in ("Z", "z"):
        return UTC
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 23 or minutes > 59:
        raise EnvelopeError(f"{header} {whole!r} has an offset that does not exist")
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if text[0] == "-" else delta)
