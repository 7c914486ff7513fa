"""What happens when a partner onboards: registration access tokens and school claims.

Decision 41 of docs/architecture.md. Each use case takes a connection already inside a
transaction (the caller's), and runs in this order: who acts, locks, checks, writes, events.

Registration access token (in the manner of RFC 7591/7592, OAuth 2.0 Dynamic Client
Registration and its Management Protocol):

1. ``POST /partners`` answers, once, a ``mrt_`` token; only its SHA-256 is stored (the token
   is 256 random bits: a fast hash is enough), with an expiry (``registration_token_days``).
2. With it (``Authorization: Bearer mrt_…``) the partner reads and manages its own registration
   (record, contacts, history, school claim) and, once verified, creates its first API client:
   that uses the token up (from then on the partner authenticates with its client).
3. Lost or expired: an operator issues a new one (:func:`reissue_registration_token`), which
   replaces the old and is written in the partner's history.

School claim (proof of control of a collège's or lycée's institutional mailbox):

1. A school registers with a UAI of the Annuaire that has a ``Mail``: it stays ``pending``, and
   a one-time code of eight digits goes to that mailbox (:func:`open_school_claim`: the
   ``SchoolClaimCodeSealed`` event, mailed by notifications); only its argon2 hash is kept, and
   the event carries it sealed for notifications alone (decision 63): the registry cannot open
   it, nor can any other reader of the bus or of the outbox.
2. The registrant sends the code back within a day, five tries at most
   (:func:`prove_school_claim`): the school is verified, and every other pending registration of
   the same UAI (a squatter's) is rejected, each with its history and event.
3. No mailbox in the Annuaire, a code expired or tried five times: the registration waits for an
   operator, as any other. A pending registration never holds a UAI: only a verified (or
   suspended) partner does, so a squatter cannot block the real school.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from maillage.common.auth import Caller
from maillage.common.catalog import (
    PartnerFacts,
    PartnerRejected,
    PartnerVerified,
    SchoolClaimCodeSealed,
    school_claim_seal_context,
)
from maillage.common.messages import status_label
from maillage.common.outbox import publish
from maillage.common.problems import Problem
from maillage.common.sealing import SealingKey
from maillage.registry import reference, store, tokens
from maillage.registry.domain import PartnerStatus

REGISTRATION_TOKEN_PREFIX = "mrt_"  # noqa: S105 - a prefix, not a secret
CODE_DIGITS = 8
CLAIM_LIFETIME = timedelta(hours=24)
MAX_CODE_ATTEMPTS = 5
SCHOOL_MAILBOX_ACTOR = "system:school-mailbox"


# --- problems ----------------------------------------------------------------------------------


def _not_found(partner_id: uuid.UUID) -> Problem:
    return Problem(
        404, "partner_not_found", "Partenaire introuvable", detail=f"Aucun partenaire {partner_id}."
    )


def _not_yourself() -> Problem:
    return Problem(
        403,
        "forbidden",
        "Accès refusé",
        detail="Seul le partenaire lui-même envoie le code reçu par son établissement.",
    )


def _not_pending(status: str) -> Problem:
    return Problem(
        409,
        "partner_not_pending",
        "Inscription déjà traitée",
        detail=f"Cette inscription est au statut {status_label(status)} : aucun code n'est "
        "plus attendu.",
        partner_status=status,
    )


def _no_school_claim() -> Problem:
    return Problem(
        409,
        "no_school_claim",
        "Aucun code en attente",
        detail="Aucun code n'attend de retour pour cette inscription (expiré, trop d'essais, ou "
        "jamais envoyé) : un opérateur la vérifiera.",
    )


@dataclass(frozen=True)
class WrongCode:
    """A wrong code, counted: the caller commits the count, then answers :func:`wrong_code`."""

    attempts_left: int


def wrong_code(attempts_left: int) -> Problem:
    return Problem(
        422,
        "wrong_code",
        "Code erroné",
        detail="Ce n'est pas le code envoyé à l'établissement ; essais restants : "
        f"{attempts_left}.",
        attempts_left=attempts_left,
    )


def _school_taken(uai: str) -> Problem:
    return Problem(
        409,
        "school_already_registered",
        "Établissement déjà inscrit",
        detail=f"L'établissement {uai} est déjà tenu par un partenaire vérifié.",
    )


# --- registration access tokens ----------------------------------------------------------------


def registration_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


async def issue_registration_token(
    connection: asyncpg.Connection,
    partner_id: uuid.UUID,
    *,
    issued_by: str,
    now: datetime,
    lifetime: timedelta,
) -> tuple[str, datetime]:
    """A new registration access token for the partner (replacing any other) and its expiry.
    The token is returned once and never stored."""
    token = REGISTRATION_TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = now + lifetime
    await store.replace_registration_token(
        connection,
        partner_id,
        token_hash=registration_token_hash(token),
        issued_by=issued_by,
        issued_at=now,
        expires_at=expires_at,
    )
    return token, expires_at


async def registrant(
    connection: asyncpg.Connection | asyncpg.Pool, token: str, *, now: datetime
) -> Caller | None:
    """The caller a live registration access token stands for (the partner itself, without
    roles), or None for an unknown, expired or used-up token."""
    partner_id = await store.partner_of_registration_token(
        connection, registration_token_hash(token), now
    )
    if partner_id is None:
        return None
    return Caller(
        subject=f"registration:{partner_id}", partner_id=str(partner_id), roles=frozenset()
    )


def is_registrant(caller: Caller) -> bool:
    return caller.subject.startswith("registration:")


async def reissue_registration_token(
    connection: asyncpg.Connection,
    caller: Caller,
    partner_id: uuid.UUID,
    *,
    reason: str,
    now: datetime,
    lifetime: timedelta,
) -> tuple[str, datetime]:
    """An operator's new registration access token for a partner that lost its own; the old
    one stops working and the partner's history says who issued it and why. 404 unknown."""
    partner = await store.get_partner(connection, partner_id, for_update=True)
    if partner is None:
        raise _not_found(partner_id)
    actor = f"operator:{caller.subject}"
    token, expires_at = await issue_registration_token(
        connection, partner_id, issued_by=actor, now=now, lifetime=lifetime
    )
    await store.record_status(
        connection,
        partner_id,
        partner["status"],
        partner["status"],
        actor,
        f"nouveau jeton d'inscription : {reason}",
    )
    return token, expires_at


# --- school claims -----------------------------------------------------------------------------


async def open_school_claim(
    connection: asyncpg.Connection,
    partner: dict[str, Any],
    school: reference.ReferenceSchool,
    *,
    now: datetime,
    sealing: SealingKey,
) -> dict[str, Any] | None:
    """Send a one-time code to the school's institutional mailbox; what the registrant is told
    (``mailbox``, ``expires_at``), or None when the Annuaire gives the school no mailbox (the
    registration then waits for an operator). Publishes SchoolClaimCodeSealed, the code sealed
    with ``sealing`` (notifications' public key) and bound to the claim, partner and mailbox."""
    if school.mail is None:
        return None
    claim_id = uuid.uuid4()
    code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    expires_at = now + CLAIM_LIFETIME
    await store.insert_school_claim(
        connection,
        claim_id=claim_id,
        partner_id=uuid.UUID(partner["id"]),
        uai=school.uai,
        mailbox=school.mail,
        code_hash=await tokens.hash_secret_off_loop(code),
        created_at=now,
        expires_at=expires_at,
    )
    partner_id = uuid.UUID(partner["id"])
    await publish(
        connection,
        SchoolClaimCodeSealed(
            claim_id=claim_id,
            partner_id=partner_id,
            uai=school.uai,
            school_name=school.name,
            mailbox=school.mail,
            legal_name=partner["legal_name"],
            sealed_code=sealing.seal(
                code, school_claim_seal_context(claim_id, partner_id, school.mail)
            ),
            expires_at=expires_at,
        ),
    )
    return {"mailbox": school.mail, "expires_at": expires_at}


async def prove_school_claim(
    connection: asyncpg.Connection,
    caller: Caller,
    partner_id: uuid.UUID,
    code: str,
    *,
    now: datetime,
) -> dict[str, Any]:
    """The code sent to the school's mailbox came back: the school, verified. Every other
    pending registration of its UAI is rejected. 403 for another caller than the partner itself,
    404 unknown, 409 partner_not_pending, no_school_claim (none open, expired, or out of tries),
    school_already_registered. A wrong code is counted and returned as :class:`WrongCode` (not
    raised: the count must commit; the fifth closes the claim). Publishes PartnerVerified and one
    PartnerRejected per rival."""
    if caller.partner_id != str(partner_id):
        raise _not_yourself()
    partner = await store.get_partner(connection, partner_id, for_update=True)
    if partner is None:
        raise _not_found(partner_id)
    if partner["status"] != PartnerStatus.PENDING:
        raise _not_pending(partner["status"])
    claim = await store.open_school_claim(connection, partner_id, for_update=True)
    if claim is None:
        raise _no_school_claim()
    if claim.expires_at <= now:
        await store.close_school_claims(connection, partner_id, now=now, proven=False)
        raise _no_school_claim()
    if not await tokens.verify_secret_off_loop(claim.code_hash, code):
        attempts = await store.count_failed_attempt(connection, claim.id)
        if attempts >= MAX_CODE_ATTEMPTS:
            await store.close_school_claims(connection, partner_id, now=now, proven=False)
        return WrongCode(max(0, MAX_CODE_ATTEMPTS - attempts))
    if await store.find_by_identifiers(connection, siret=None, rna=None, uai=claim.uai):
        raise _school_taken(claim.uai)
    rivals = await store.pending_rivals(connection, claim.uai, partner_id)
    await store.close_school_claims(connection, partner_id, now=now, proven=True)
    verified = await store.change_status(
        connection,
        partner_id,
        from_status=PartnerStatus.PENDING.value,
        to_status=PartnerStatus.VERIFIED.value,
        actor=SCHOOL_MAILBOX_ACTOR,
        reason=f"le code envoyé à {claim.mailbox} (Annuaire de l'éducation) est revenu",
    )
    await publish(connection, PartnerVerified(**partner_facts(verified)))
    for rival in rivals:
        rival_id = uuid.UUID(rival["id"])
        await store.close_school_claims(connection, rival_id, now=now, proven=False)
        rejected = await store.change_status(
            connection,
            rival_id,
            from_status=PartnerStatus.PENDING.value,
            to_status=PartnerStatus.REJECTED.value,
            actor=SCHOOL_MAILBOX_ACTOR,
            reason=f"l'établissement {claim.uai} a prouvé qu'il tient {claim.mailbox} par "
            f"l'inscription {partner_id}",
        )
        await publish(connection, PartnerRejected(**partner_facts(rejected)))
    return verified


def partner_facts(partner: dict[str, Any]) -> dict[str, Any]:
    """A partner row as the fields of its events (PartnerFacts: never its contacts)."""
    facts = {name: partner[name] for name in PartnerFacts.model_fields if name in partner}
    facts["partner_id"] = partner["id"]
    facts["cites_educatives"] = tuple(partner["cites_educatives"])
    facts["programmes"] = tuple(partner["programmes"])
    return facts
