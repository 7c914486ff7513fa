"""Bearer-token authentication: JWTs verified locally against the issuer's JWKS.

The registry issues the tokens; any OIDC provider can replace it by configuration (``JWKS_URL``,
``JWT_ISSUER``, ``JWT_AUDIENCE``). Only asymmetric algorithms are accepted, so neither
``alg: none`` nor an HMAC signed with the public key can pass. Keys are cached and fetched again
when a token names an unknown ``kid`` (key rotation), at most once per ``refresh_interval``.

A token outlives a suspension (15 minutes), so a token alone never lets a partner change
anything: on every state-changing request (any method but GET, HEAD, OPTIONS) the caller's
partner is looked up in the service's own records (``app.state.partner_status``: the registry's
table, or another service's read model of ``registry.partners``), and a suspended or rejected
partner gets 403 ``partner_not_in_good_standing`` (:func:`check_standing`). Decision 40.

A token is checked once, not on every request: :class:`TokenVerifier` keeps the caller of each
token it accepted (a bounded LRU keyed by the whole token string) until the token's expiry, and
only while the key that verified it is still the one the JWKS cache holds for its ``kid`` (a
withdrawn or replaced key, or any refresh of the JWKS, sends the token through the full check
again). Nothing else changes: an expired token is refused at the same second as before, and the
partner's standing is still read on every write. Decision 59.

A staff token also says where its holder acts (decision 64): ``departements``, the list of the
département codes of a territorial account (at most ``MAX_DEPARTEMENTS``), or ``national: true``
for an account that acts everywhere. A token with neither acts nowhere; a partner's token carries
neither (partners are scoped by ``partner_id``). :meth:`Caller.covers` answers for a département.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import httpx
import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from maillage.common.geography import MAX_DEPARTEMENTS, is_departement_code
from maillage.common.logging import get_logger
from maillage.common.messages import status_label
from maillage.common.problems import Problem

log = get_logger(__name__)

ALGORITHMS = ["EdDSA", "ES256"]
ROLES = frozenset({"partner", "school", "officer", "ordonnateur", "comptable", "operator", "admin"})
# A partner in one of these may read but change nothing (the registry's statuses).
BARRED_STATUSES = frozenset({"suspended", "rejected"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

PartnerStatusLookup = Callable[[Any, str], Awaitable[str | None]]
"""``app.state.partner_status``: ``(pool, partner_id) -> status`` in the service's own records,
None for a partner they do not know (yet)."""


_STATUS_BY = {
    "id": "SELECT status FROM partners WHERE id = $1",
    "partner_id": "SELECT status FROM partners WHERE partner_id = $1",
}


def partners_table_status(id_column: Literal["id", "partner_id"]) -> PartnerStatusLookup:
    """The lookup every service sets as ``app.state.partner_status``: the ``status`` of its
    ``partners`` table (the registry's own, or a read model of ``registry.partners``) by
    ``id_column``; None when unknown or when the token's partner id is not a UUID."""
    query = _STATUS_BY[id_column]

    async def lookup(connection: Any, partner_id: str) -> str | None:
        try:
            key = uuid.UUID(partner_id)
        except ValueError:
            return None
        status: str | None = await connection.fetchval(query, key)
        return status

    return lookup


@dataclass(frozen=True)
class Caller:
    """Who is calling: the token's subject, the partner it acts for (if any), its roles, and
    where a staff member acts: the ``departements`` of a territorial account, or ``national``."""

    subject: str
    partner_id: str | None
    roles: frozenset[str]
    departements: frozenset[str] = frozenset()
    national: bool = False

    def has_role(self, *roles: str) -> bool:
        return not self.roles.isdisjoint(roles)

    def covers(self, departement: str) -> bool:
        """Whether the caller acts for ``departement``: a national account everywhere, a
        territorial one in its départements only, a token with no territory nowhere."""
        return self.national or departement in self.departements


class JWKSCache:
    """The issuer's public keys by ``kid``, fetched with httpx and kept for ``ttl`` seconds."""

    def __init__(
        self,
        url: str,
        *,
        ttl: float = 300.0,
        refresh_interval: float = 10.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url
        self.ttl = ttl
        self.refresh_interval = refresh_interval
        self._client = client
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> jwt.PyJWK | None:
        now = time.monotonic()
        stale = now - self._fetched_at > self.ttl
        unknown = kid not in self._keys and now - self._fetched_at > self.refresh_interval
        if stale or unknown:
            async with self._lock:
                # Another request may have refreshed while this one waited for the lock.
                if time.monotonic() - self._fetched_at > min(self.refresh_interval, self.ttl):
                    await self._refresh()
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        client = self._client or httpx.AsyncClient(timeout=5.0)
        try:
            response = await client.get(self.url)
            response.raise_for_status()
            document = response.json()
            entries = document.get("keys") if isinstance(document, dict) else None
            if not isinstance(entries, list):
                raise ValueError("the JWKS document has no list of keys")
            keys: dict[str, jwt.PyJWK] = {}
            for data in entries:
                if not isinstance(data, dict):
                    log.warning("jwks key skipped", error="not a JSON object")
                    continue
                try:
                    key = jwt.PyJWK(data)
                # PyJWTError, not only PyJWKError: an unsupported kty/crv or malformed key raises
                # InvalidKeyError. An unusable key does not hide the others.
                except jwt.PyJWTError as error:
                    log.warning("jwks key skipped", kid=data.get("kid"), error=str(error))
                    continue
                if key.key_id:
                    keys[key.key_id] = key
            self._keys = keys
        except (httpx.HTTPError, ValueError) as error:
            # Keep the keys we had: a JWKS outage must not log everybody out.
            log.warning("jwks refresh failed", url=self.url, error=str(error))
        finally:
            self._fetched_at = time.monotonic()
            if self._client is None:
                await client.aclose()


class TokenVerifier:
    """Checks a bearer token: signature by a published key, expiry, issuer and audience. The
    callers of the last ``remembered`` tokens accepted are kept (see the module docstring)."""

    def __init__(
        self,
        jwks: JWKSCache,
        *,
        issuer: str,
        audience: str,
        leeway: float = 30,
        remembered: int = 4096,
    ) -> None:
        self.jwks = jwks
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.remembered = remembered
        # token -> (caller, the time.time() from which it is expired, kid, the verifying key)
        self._accepted: OrderedDict[str, tuple[Caller, float, str, jwt.PyJWK]] = OrderedDict()

    async def verify(self, token: str) -> Caller:
        accepted = self._accepted.get(token)
        if accepted is not None:
            caller, expired_from, kid, key = accepted
            if time.time() < expired_from and await self.jwks.key(kid) is key:
                if token in self._accepted:
                    self._accepted.move_to_end(token)
                return caller
            self._accepted.pop(token, None)
        return await self._verify(token)

    async def _verify(self, token: str) -> Caller:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise _unauthenticated("Le jeton est mal formé.") from error
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ALGORITHMS:
            raise _unauthenticated(f"Un jeton est signé en {' ou '.join(ALGORITHMS)}.")
        if not isinstance(kid, str):
            raise _unauthenticated("Le jeton ne nomme pas sa clé (kid).")
        key = await self.jwks.key(kid)
        if key is None:
            raise _unauthenticated("Le jeton est signé par une clé inconnue.")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as error:
            raise _unauthenticated("Le jeton a expiré ; demandez-en un nouveau.") from error
        except jwt.PyJWTError as error:
            raise _unauthenticated("Le jeton n'est pas valide.", reason=str(error)) from error
        roles = claims.get("roles", [])
        partner_id = claims.get("partner_id")
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise _unauthenticated("La revendication roles du jeton n'est pas une liste de textes.")
        departements, national = _territory(claims)
        caller = Caller(
            subject=str(claims["sub"]),
            partner_id=str(partner_id) if partner_id is not None else None,
            roles=frozenset(roles) & ROLES,
            departements=departements,
            national=national,
        )
        # PyJWT refuses once now >= exp + leeway: the same instant, never later.
        self._accepted[token] = (caller, float(claims["exp"]) + self.leeway, kid, key)
        while len(self._accepted) > self.remembered:
            self._accepted.popitem(last=False)
        return caller


def _territory(claims: dict[str, Any]) -> tuple[frozenset[str], bool]:
    """The ``departements`` and ``national`` claims; 401 when they are not what the registry
    signs (a list of at most ``MAX_DEPARTEMENTS`` codes, a boolean)."""
    departements = claims.get("departements", [])
    national = claims.get("national", False)
    if (
        not isinstance(departements, list)
        or len(departements) > MAX_DEPARTEMENTS
        or not all(isinstance(code, str) and is_departement_code(code) for code in departements)
    ):
        raise _unauthenticated(
            "La revendication departements du jeton n'est pas une liste de codes de département."
        )
    if not isinstance(national, bool):
        raise _unauthenticated("La revendication national du jeton n'est pas un booléen.")
    return frozenset(departements), national


def _unauthenticated(detail: str, **extensions: str) -> Problem:
    """401 with a French ``detail``; ``reason`` (when given) is the library's own words."""
    return Problem(
        401,
        "unauthenticated",
        "Authentification requise",
        detail=detail,
        **extensions,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


_bearer = HTTPBearer(auto_error=False, description="A JWT issued by the Maillage registry")


async def current_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """FastAPI dependency: the authenticated caller, or 401; on a write, 403 when its partner is
    not in good standing (:func:`check_standing`, on a connection of its own)."""
    caller = await authenticated_caller(request, credentials)
    if request.method not in SAFE_METHODS:
        await check_standing(request, caller)
    return caller


async def authenticated_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """FastAPI dependency: the authenticated caller, or 401, and nothing else. A writing route
    that takes it (:data:`StandingReadByRoute`) calls :func:`check_standing` itself, first, on the
    connection it then works on: one pooled connection per request instead of two (decision 71)."""
    if credentials is None:
        raise Problem(
            401,
            "unauthenticated",
            "Authentification requise",
            detail="Envoyez un jeton dans l'en-tête Authorization (Bearer).",
            headers={"WWW-Authenticate": "Bearer"},
        )
    verifier: TokenVerifier = request.app.state.token_verifier
    return await verifier.verify(credentials.credentials)


async def check_standing(request: Request, caller: Caller, connection: Any = None) -> None:
    """403 ``partner_not_in_good_standing`` when the caller acts for a partner that this
    service's records (``app.state.partner_status``) say is suspended or rejected. Staff callers
    and partners unknown to the records pass: each use case still checks what it needs
    (a verified partner, the right kind). A service that sets no lookup checks nothing.
    Read on ``connection`` when given (the route's own), else on the service's pool."""
    lookup: PartnerStatusLookup | None = getattr(request.app.state, "partner_status", None)
    if caller.partner_id is None or lookup is None:
        return
    if connection is None:
        runtime = getattr(request.app.state, "runtime", None)
        connection = getattr(runtime, "pool", None)
        if connection is None:
            raise Problem(503, "unavailable", "Service en démarrage")
    status = await lookup(connection, caller.partner_id)
    if status in BARRED_STATUSES:
        raise not_in_good_standing(caller.partner_id, status)


def not_in_good_standing(partner_id: object, status: str) -> Problem:
    """403 ``partner_not_in_good_standing``: the partner is suspended or rejected
    (:data:`BARRED_STATUSES`). The same answer whichever check sees it first: the standing
    check above, or a use case reading the caller's partner moments later, after the
    suspension's event has landed between the two reads."""
    return Problem(
        403,
        "partner_not_in_good_standing",
        "Partenaire suspendu",
        detail=f"Le partenaire {partner_id} est au statut {status_label(status)} : il ne peut "
        "rien modifier.",
        partner_status=status,
    )


CurrentCaller = Annotated[Caller, Depends(current_caller)]
"""Route parameter type: the authenticated caller."""

StandingReadByRoute = Annotated[Caller, Depends(authenticated_caller)]
"""Route parameter type: the authenticated caller, whose standing the route reads itself: a
writing route that takes it must ``await check_standing(request, caller, connection)`` before
anything else, on the connection it works on (decision 71)."""


def require_role(*roles: str) -> Any:
    """A dependency that lets through only callers holding one of ``roles`` (403 otherwise)."""

    async def check(caller: CurrentCaller) -> Caller:
        if not caller.has_role(*roles):
            raise Problem(
                403,
                "forbidden",
                "Accès refusé",
                detail=f"Il faut l'un de ces rôles : {', '.join(roles)}.",
            )
        return caller

    return Depends(check)
