"""The token issuer: signing keys that rotate, hashed secrets, and short-lived JWTs.

Tokens are EdDSA (Ed25519) JWTs with a ``kid``. One key signs at a time; the next one is
published in the JWKS a whole rotation period before it signs, so verifiers' cached key sets
already hold it when it takes over; every ``rotation_days`` it does, and the previous one stays
in the JWKS for ``token_ttl`` more (the overlap), so no valid token ever names an unpublished
key. Private keys are stored encrypted with the registry's key-encryption secret. Client secrets
and staff passwords are stored as argon2id hashes only.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
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


# Argon2 takes tens of milliseconds of CPU by design: it runs on these threads, never on the
# event loop, so a password guesser slows other guessers and no one else (/livez, reads). Two
# threads: the machines have two cores; argon2-cffi releases the GIL while it hashes.
_HASHING = ThreadPoolExecutor(max_workers=2, thread_name_prefix="argon2")


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


async def hash_secret_off_loop(secret: str) -> str:
    """:func:`hash_secret` on the hashing threads."""
    return await asyncio.get_running_loop().run_in_executor(_HASHING, hash_secret, secret)


async def verify_secret_off_loop(secret_hash: str | None, secret: str) -> bool:
    """:func:`verify_secret` on the hashing threads (at most two at a time; others wait)."""
    return await asyncio.get_running_loop().run_in_executor(
        _HASHING, verify_secret, secret_hash, secret
    )


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
    """Signs tokens with the active key, and publishes the next key one rotation ahead.

    Two keys live at once: the *active* one signs; the *next* one (``signs_from`` NULL) is
    already in the JWKS. When the active key is older than ``rotation`` and the next one has been
    published for at least ``publish_ahead``, the next one takes over and a new next one is
    published. A verifier whose cached JWKS is younger than ``publish_ahead`` therefore already
    knows the key of every token it is shown, and never needs its on-unknown-``kid`` refetch
    (which ``maillage.common.auth.JWKSCache`` throttles). Decision 38 of docs/architecture.md.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        key_secret: bytes,
        token_ttl: timedelta = timedelta(minutes=15),
        rotation: timedelta = timedelta(days=30),
        publish_ahead: timedelta = timedelta(minutes=10),
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.key_secret = key_secret
        self.token_ttl = token_ttl
        self.rotation = rotation
        self.publish_ahead = publish_ahead
        # The active key and the moment to look again (its rotation is due, or its successor
        # had not been published long enough).
        self._active: tuple[SigningKey, datetime] | None = None

    async def active_key(self, pool: asyncpg.Pool) -> SigningKey:
        """The key that signs now; rotates it (one replica at a time) when due."""
        now = datetime.now(UTC)
        if self._active is not None and now < self._active[1]:
            return self._active[0]
        async with pool.acquire() as connection, connection.transaction():
            # Replicas rotate one at a time; the loser reads the winner's keys.
            await connection.execute("SELECT pg_advisory_xact_lock(hashtext('signing_keys'))")
            active, waiting = await self._live_keys(connection)
            if active is None:  # the very first key signs at once: no token names another yet
                active = await self._create_key(connection, signs_from=now)
            if waiting is None:
                waiting = await self._create_key(connection, signs_from=None)
            due = active["signs_from"] + self.rotation
            ready = waiting["created_at"] + self.publish_ahead
            if now >= due and now >= ready:
                await connection.execute(
                    "UPDATE signing_keys SET retired_at = $2 WHERE kid = $1", active["kid"], now
                )
                active = await connection.fetchrow(
                    "UPDATE signing_keys SET signs_from = $2 WHERE kid = $1"
                    " RETURNING kid, private_pem, created_at, signs_from",
                    waiting["kid"],
                    now,
                )
                waiting = await self._create_key(connection, signs_from=None)
                due = now + self.rotation
                ready = waiting["created_at"] + self.publish_ahead
        key = SigningKey(
            active["kid"],
            serialization.load_pem_private_key(active["private_pem"], password=self.key_secret),  # type: ignore[arg-type]
        )
        self._active = (key, max(due, ready))
        return key

    @staticmethod
    async def _live_keys(
        connection: asyncpg.Connection,
    ) -> tuple[asyncpg.Record | None, asyncpg.Record | None]:
        """(the signing key, the published key waiting to sign), either possibly absent."""
        rows = await connection.fetch(
            "SELECT kid, private_pem, created_at, signs_from FROM signing_keys"
            " WHERE retired_at IS NULL"
        )
        active = next((row for row in rows if row["signs_from"] is not None), None)
        waiting = next((row for row in rows if row["signs_from"] is None), None)
        return active, waiting

    async def _create_key(
        self, connection: asyncpg.Connection, *, signs_from: datetime | None
    ) -> asyncpg.Record:
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
            INSERT INTO signing_keys (kid, algorithm, private_pem, public_jwk, signs_from)
            VALUES ($1, $2, $3, $4::text::jsonb, $5)
            RETURNING kid, private_pem, created_at, signs_from
            """,
            kid,
            ALGORITHM,
            pem,
            json.dumps(jwk),
            signs_from,
        )
        return row

    async def jwks(self, pool: asyncpg.Pool) -> dict[str, Any]:
        """The active key, the next one (published before it signs), and the retired ones whose
        tokens may still be valid; newest first."""
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
        self,
        pool: asyncpg.Pool,
        *,
        subject: str,
        partner_id: str | None,
        roles: list[str],
        departements: list[str] | None = None,
        national: bool = False,
    ) -> tuple[str, int]:
        """A signed token and its lifetime in seconds. A staff token carries where its holder
        acts: ``departements`` (omitted when empty) or ``national: true`` (omitted when not)."""
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
        if departements:
            claims["departements"] = sorted(departements)
        if national:
            claims["national"] = True
        token = jwt.encode(claims, key.private, algorithm=ALGORITHM, headers={"kid": key.kid})
        return token, int(self.token_ttl.total_seconds())
