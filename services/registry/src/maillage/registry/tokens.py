"""The token issuer: signing keys that rotate, hashed secrets, and short-lived JWTs.

Tokens are EdDSA (Ed25519) JWTs with a ``kid``. One key signs at a time; every
``rotation_days`` a new key takes over and the previous one stays in the JWKS for
``token_ttl`` more (the overlap), so no valid token ever names an unpublished key. Private
keys are stored encrypted with the registry's key-encryption secret. Client secrets and staff
passwords are stored as argon2id hashes only.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwt.algorithms import OKPAlgorithm

ALGORITHM = "EdDSA"
_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verifying against this keeps the time of a wrong client id close to that of a wrong secret.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(32))


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


def verify_secret(secret_hash: str | None, secret: str) -> bool:
    try:
        return _hasher.verify(secret_hash or _DUMMY_HASH, secret) and secret_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_client_credentials() -> tuple[str, str]:
    """A client id (public) and a secret (shown once)."""
    return f"mcl_{secrets.token_hex(12)}", f"mcs_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: ed25519.Ed25519PrivateKey


class Issuer:
    """Signs tokens with the active key; rotates it when it is older than ``rotation``."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        key_secret: bytes,
        token_ttl: timedelta = timedelta(minutes=15),
        rotation: timedelta = timedelta(days=30),
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.key_secret = key_secret
        self.token_ttl = token_ttl
        self.rotation = rotation
        self._active: tuple[SigningKey, datetime] | None = None

    async def active_key(self, pool: asyncpg.Pool) -> SigningKey:
        now = datetime.now(UTC)
        if self._active is not None and now - self._active[1] < self.rotation:
            return self._active[0]
        async with pool.acquire() as connection, connection.transaction():
            # Replicas rotate one at a time; the loser reads the winner's key.
            await connection.execute("SELECT pg_advisory_xact_lock(hashtext('signing_keys'))")
            row = await connection.fetchrow(
                "SELECT kid, private_pem, created_at FROM signing_keys WHERE retired_at IS NULL"
            )
            if row is None or now - row["created_at"] >= self.rotation:
                if row is not None:
                    await connection.execute(
                        "UPDATE signing_keys SET retired_at = now() WHERE kid = $1", row["kid"]
                    )
                row = await self._create_key(connection)
        key = SigningKey(
            row["kid"],
            serialization.load_pem_private_key(row["private_pem"], password=self.key_secret),  # type: ignore[arg-type]
        )
        self._active = (key, row["created_at"])
        return key

    async def _create_key(self, connection: asyncpg.Connection) -> asyncpg.Record:
        private = ed25519.Ed25519PrivateKey.generate()
        kid = f"{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"
        jwk: dict[str, Any] = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
        jwk.update(kid=kid, use="sig", alg=ALGORITHM)
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self.key_secret),
        )
        row: asyncpg.Record = await connection.fetchrow(
            """
            INSERT INTO signing_keys (kid, algorithm, private_pem, public_jwk)
            VALUES ($1, $2, $3, $4::text::jsonb) RETURNING kid, private_pem, created_at
            """,
            kid,
            ALGORITHM,
            pem,
            json.dumps(jwk),
        )
        return row

    async def jwks(self, pool: asyncpg.Pool) -> dict[str, Any]:
        """The active key and the retired ones whose tokens may still be valid."""
        await self.active_key(pool)
        rows = await pool.fetch(
            """
            SELECT public_jwk::text AS jwk FROM signing_keys
            WHERE retired_at IS NULL OR retired_at > now() - $1::float8 * interval '1 second'
            ORDER BY created_at DESC
            """,
            self.token_ttl.total_seconds() + 60,
        )
        return {"keys": [json.loads(row["jwk"]) for row in rows]}

    async def issue(
        self, pool: asyncpg.Pool, *, subject: str, partner_id: str | None, roles: list[str]
    ) -> tuple[str, int]:
        """A signed token and its lifetime in seconds."""
        key = await self.active_key(pool)
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + int(self.token_ttl.total_seconds()),
            "jti": str(uuid.uuid4()),
            "roles": sorted(roles),
        }
        if partner_id is not None:
            claims["partner_id"] = partner_id
        token = jwt.encode(claims, key.private, algorithm=ALGORITHM, headers={"kid": key.kid})
        return token, int(self.token_ttl.total_seconds())
