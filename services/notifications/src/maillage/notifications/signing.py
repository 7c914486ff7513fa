"""Standard Webhooks signatures: pure functions, standard library only.

A delivery carries three headers (https://www.standardwebhooks.com/):

``webhook-id``
    The event id: stable across retries, so a receiver deduplicates on it.
``webhook-timestamp``
    Unix seconds *of this attempt*: receivers refuse timestamps more than a few minutes away from
    their clock, so every retry is signed again with a fresh timestamp (the id and body stay).
``webhook-signature``
    Space-separated ``v1,<base64 HMAC-SHA256>`` signatures over ``f"{id}.{timestamp}."`` + body,
    one per live secret: during a rotation the current and the previous secrets both sign, so a
    receiver holding either one accepts the delivery.

A secret is ``whsec_`` followed by the base64 of its random key bytes; the HMAC key is the decoded
bytes, not the text. The official ``standardwebhooks`` library verifies what this module signs (see
the tests); the service signs with its own few lines so that production needs no extra package and
the tests cross-check two independent implementations.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets as _secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

SECRET_PREFIX = "whsec_"  # noqa: S105  # the prefix of every secret, not a secret
SIGNATURE_VERSION = "v1"
# Standard Webhooks: secrets are between 24 and 64 random bytes.
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
DEFAULT_SECRET_BYTES = 32
# How long a rotated-out secret keeps signing, so receivers can switch without losing a delivery.
DEFAULT_ROTATION_OVERLAP = timedelta(hours=24)

# A message id goes into a header and into the signed content: printable ASCII, no space, no dot
# (a dot would make ``id.timestamp.body`` ambiguous).
_MSG_ID = re.compile(r"[!-~]{1,255}")


class InvalidSecret(ValueError):
    """The text is not a ``whsec_`` secret of 24 to 64 base64-encoded bytes."""


def new_secret(nbytes: int = DEFAULT_SECRET_BYTES) -> str:
    """A fresh signing secret, ``whsec_`` + base64 of ``nbytes`` random bytes (shown once)."""
    if not MIN_SECRET_BYTES <= nbytes <= MAX_SECRET_BYTES:
        raise ValueError(f"a secret has {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes")
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(nbytes)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret: its base64 part, decoded."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidSecret(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSecret("a webhook secret is base64 after its prefix") from exc
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise InvalidSecret(f"a webhook secret has {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes")
    return key


def _check_msg_id(msg_id: str) -> None:
    if not _MSG_ID.fullmatch(msg_id) or "." in msg_id:
        raise ValueError("a webhook id is 1 to 255 printable ASCII characters without '.' or space")


def _signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    _check_msg_id(msg_id)
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ValueError("a webhook timestamp is a non-negative integer of Unix seconds")
    return f"{msg_id}.{timestamp}.".encode("ascii") + body


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256(key, f"{msg_id}.{timestamp}." + body)>``."""
    digest = hmac.new(
        secret_key(secret), _signed_content(msg_id, timestamp, body), hashlib.sha256
    ).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per secret, space-separated, in order."""
    if not secrets:
        raise ValueError("at least one secret signs a webhook")
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in _unique(secrets))


def webhook_headers(
    msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str]
) -> dict[str, str]:
    """The headers of one delivery attempt (lower-case names, as HTTP/2 wants them)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
        "content-type": "application/json",
    }


def iso_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``: ``2026-03-01T09:30:00.123456Z``."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a webhook timestamp is timezone-aware")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def body_for(event_type: str, timestamp: datetime, data: Mapping[str, Any]) -> bytes:
    """The Standard Webhooks body ``{"type", "timestamp", "data"}``: compact UTF-8 JSON.

    ``timestamp`` is when the event happened (not the attempt); ``data`` is JSON-ready. The bytes
    are built once per event and signed as they are: never re-serialise them per attempt.
    """
    if not event_type:
        raise ValueError("a webhook has an event type")
    payload = {"type": event_type, "timestamp": iso_timestamp(timestamp), "data": dict(data)}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


@dataclass(frozen=True)
class RetiringSecret:
    """A rotated-out secret that still signs until ``expires_at`` (exclusive)."""

    secret: str
    expires_at: datetime


@dataclass(frozen=True)
class SecretRing:
    """The secrets of one endpoint: the current one, and previous ones until they expire.

    Immutable: :meth:`rotate` and :meth:`prune` return a new ring for the store to save.
    """

    current: str
    previous: tuple[RetiringSecret, ...] = field(default=())

    def __post_init__(self) -> None:
        secret_key(self.current)
        for retiring in self.previous:
            secret_key(retiring.secret)
            iso_timestamp(retiring.expires_at)  # refuses naive datetimes

    def signing_secrets(self, at: datetime) -> list[str]:
        """The secrets that sign a delivery sent at ``at``: current first, then live previous."""
        live = [p.secret for p in self.previous if p.expires_at > at]
        return _unique([self.current, *live])

    def rotate(
        self,
        new: str,
        *,
        now: datetime,
        overlap: timedelta = DEFAULT_ROTATION_OVERLAP,
    ) -> SecretRing:
        """``new`` becomes current; the old current keeps signing until ``now + overlap``.

        ``overlap=timedelta(0)`` retires the old secret at once (a leaked secret). Expired
        previous secrets are dropped.
        """
        if overlap < timedelta(0):
            raise ValueError("a rotation overlap is not negative")
        if new == self.current:
            raise ValueError("a rotation brings a new secret")
        kept = tuple(p for p in self.previous if p.expires_at > now and p.secret != new)
        if overlap > timedelta(0):
            kept = (RetiringSecret(self.current, now + overlap), *kept)
        return SecretRing(current=new, previous=kept)

    def prune(self, now: datetime) -> SecretRing:
        """The same ring without the previous secrets expired at ``now``."""
        return SecretRing(
            current=self.current, previous=tuple(p for p in self.previous if p.expires_at > now)
        )

    def headers(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """:func:`webhook_headers` signed by the secrets live at ``timestamp``."""
        at = datetime.fromtimestamp(timestamp, UTC)
        return webhook_headers(msg_id, timestamp, body, self.signing_secrets(at))
