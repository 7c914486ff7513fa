"""Webhook signing secrets, encrypted at rest.

A webhook secret must be usable to sign every delivery, so unlike API client secrets it cannot be
stored hashed. It is stored *sealed*: AES-256-GCM under a key derived (HKDF-SHA256) from the
service's ``NOTIFICATIONS_SECRET_ENCRYPTION_KEY``, as the registry encrypts its signing keys with
``REGISTRY_KEY_ENCRYPTION_SECRET``. The endpoint's id is the associated data: a sealed secret
copied onto another endpoint's row does not open. A database dump or backup alone reveals no
secret; the key lives in the service's environment only.

A sealed secret is ``0x01`` (the format), a 12-byte random nonce, then the ciphertext and its
16-byte tag.
"""

from __future__ import annotations

import os
import uuid

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FORMAT = b"\x01"
NONCE_BYTES = 12
TAG_BYTES = 16
# Domain separation: the same passphrase used elsewhere would give another key.
_KEY_INFO = b"maillage.notifications webhook secrets v1"


class SecretUnreadable(ValueError):
    """A sealed secret that does not open: another key, another endpoint, or damaged bytes."""


class SecretBox:
    """Seals and opens the webhook secrets of endpoints with one key."""

    def __init__(self, passphrase: str) -> None:
        if not passphrase:
            raise ValueError("the secret encryption key is empty")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_INFO).derive(
            passphrase.encode("utf-8")
        )
        self._aead = AESGCM(key)

    def seal(self, secret: str, endpoint_id: uuid.UUID) -> bytes:
        """The secret encrypted for storage on this endpoint's row."""
        nonce = os.urandom(NONCE_BYTES)
        return FORMAT + nonce + self._aead.encrypt(nonce, secret.encode("utf-8"), endpoint_id.bytes)

    def open(self, sealed: bytes, endpoint_id: uuid.UUID) -> str:
        """The secret of a sealed value stored on this endpoint's row."""
        if sealed[:1] != FORMAT or len(sealed) <= 1 + NONCE_BYTES + TAG_BYTES:
            raise SecretUnreadable("not a sealed webhook secret")
        nonce, ciphertext = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
        try:
            plain = self._aead.decrypt(nonce, ciphertext, endpoint_id.bytes)
        except InvalidTag as exc:
            raise SecretUnreadable(
                "a webhook secret does not decrypt: was NOTIFICATIONS_SECRET_ENCRYPTION_KEY"
                " changed, or the secret moved to another endpoint?"
            ) from exc
        return plain.decode("utf-8")
