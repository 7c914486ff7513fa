"""Secrets sealed for one service: readable on the bus by nobody else (decision 63).

A secret that proves something (a school's one-time claim code) must reach the one service that
acts on it (notifications, which mails it) without being readable by every other reader of the
topic, its backups or the producer's outbox. It travels *sealed*: encrypted to the receiving
service's X25519 public key with HPKE (RFC 9180, base mode: DHKEM(X25519, HKDF-SHA256),
HKDF-SHA256, AES-256-GCM), as implemented by the ``cryptography`` package. The producer holds
the public key only, so even the producer cannot open what it sealed.

1. The receiving service holds the private key (a PEM, ``openssl genpkey -algorithm X25519``);
   the producer is configured with its public key (``openssl pkey -pubout``).
2. :meth:`SealingKey.seal` encrypts the secret with a *context*: bytes naming what the secret is
   for (the claim, the partner, the mailbox). HPKE binds the context (its ``info``): a sealed
   value moved into another event, or an event whose mailbox was changed, does not open.
3. The sealed value names the key it was sealed for (:func:`key_id`, 16 hex digits of the public
   key's SHA-256): the receiver may hold retired keys beside the current one during a rotation.
4. :meth:`OpeningKeys.open` answers the secret, or raises :class:`Unopenable` (another key, or
   altered bytes) with a message that says which and never carries any secret.

On the wire a sealed value is ``<key id>.<base64url of HPKE enc || ciphertext>``, unpadded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import x25519

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_SEALED = re.compile(r"^(?P<kid>[0-9a-f]{16})\.(?P<body>[A-Za-z0-9_-]{1,4096})$")

# Development and tests only, public on purpose: a service in production refuses it
# (decision 63). `maillage dev` generates its own pair instead (.maillage/claim-seal.pem).
DEV_PRIVATE_KEY_PEM = """-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VuBCIEIPj5EIdzp9/9FXFXFhwlVaWhfTZyIZYXWcjB0ceA36R3
-----END PRIVATE KEY-----
"""


class SealingKeyError(ValueError):
    """A configured key that is not an X25519 key in PEM."""


class Unopenable(ValueError):
    """A sealed value that does not open here: sealed for another key, or altered."""


def key_id(public_key: x25519.X25519PublicKey) -> str:
    """The 16 hex digits that name a public key in the values sealed for it."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_private_pem() -> str:
    """A new X25519 private key, PKCS#8 PEM (what ``openssl genpkey -algorithm X25519`` writes)."""
    return (
        x25519.X25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode("ascii")
    )


def load_private(pem: str) -> x25519.X25519PrivateKey:
    """The X25519 private key of a PEM; :class:`SealingKeyError` for anything else."""
    try:
        key = serialization.load_pem_private_key(pem.strip().encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError) as error:
        raise SealingKeyError(
            "not a PEM private key (openssl genpkey -algorithm X25519)"
        ) from error
    if not isinstance(key, x25519.X25519PrivateKey):
        raise SealingKeyError("the private key is not an X25519 key")
    return key


def load_public(pem: str) -> x25519.X25519PublicKey:
    """The X25519 public key of a PEM; :class:`SealingKeyError` for anything else."""
    try:
        key = serialization.load_pem_public_key(pem.strip().encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError) as error:
        raise SealingKeyError("not a PEM public key (openssl pkey -pubout)") from error
    if not isinstance(key, x25519.X25519PublicKey):
        raise SealingKeyError("the public key is not an X25519 key")
    return key


def public_pem(private_pem: str) -> str:
    """The public key of a private key, SubjectPublicKeyInfo PEM (``openssl pkey -pubout``)."""
    return (
        load_private(private_pem)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


class SealingKey:
    """Seals secrets for the holder of one private key; cannot open them."""

    def __init__(self, public_key: x25519.X25519PublicKey) -> None:
        self._public_key = public_key
        self.key_id = key_id(public_key)

    @classmethod
    def from_pem(cls, pem: str) -> SealingKey:
        return cls(load_public(pem))

    def seal(self, secret: str, context: bytes) -> str:
        """The secret, sealed for this key and bound to ``context``."""
        sealed = SUITE.encrypt(secret.encode("utf-8"), self._public_key, info=context)
        return f"{self.key_id}.{base64.urlsafe_b64encode(sealed).rstrip(b'=').decode('ascii')}"


class OpeningKeys:
    """Opens what was sealed for the current key or for a retired one (during a rotation)."""

    def __init__(self, private_keys: Iterable[x25519.X25519PrivateKey]) -> None:
        self._keys = {key_id(key.public_key()): key for key in private_keys}
        if not self._keys:
            raise SealingKeyError("no private key to open sealed values with")

    @classmethod
    def from_pems(cls, pems: Iterable[str]) -> OpeningKeys:
        return cls(load_private(pem) for pem in pems)

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def open(self, sealed: str, context: bytes) -> str:
        """The secret of a value sealed for one of these keys with this ``context``;
        :class:`Unopenable` otherwise (the message names the key id, never a secret)."""
        match = _SEALED.match(sealed)
        if match is None:
            raise Unopenable("not a sealed value (<key id>.<base64url>)")
        key = self._keys.get(match["kid"])
        if key is None:
            raise Unopenable(
                f"sealed for key {match['kid']}, which this service does not hold "
                f"(it holds {', '.join(sorted(self._keys))})"
            )
        body = match["body"]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != body:
                raise ValueError("not the canonical base64url of its bytes")
            plain = SUITE.decrypt(raw, key, info=context)
            return plain.decode("utf-8")
        except (InvalidTag, ValueError, binascii.Error) as error:
            raise Unopenable(
                f"the value sealed for key {match['kid']} does not open: altered, or bound to "
                "another claim, partner or mailbox"
            ) from error
