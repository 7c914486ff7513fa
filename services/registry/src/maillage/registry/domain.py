"""Pure rules of the registre des partenaires: no I/O, no framework.

A partner organisation registers (``pending``); an operator verifies or rejects it, and a
verified partner can be suspended and reinstated, never deleted ("le partenariat se tisse
patiemment": history is kept). A collège or lycée whose UAI is in the Annuaire de l'éducation is
verified once the code sent to its institutional mailbox comes back (decision 41), and its REP
status and pupil count come from there, never from what it says.

Every stored field is classified here, once, with the PRE charter's levels (``FIELD_LEVELS``);
what a caller sees of a partner follows from its clearance (:func:`clearance`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from maillage.common.events import Level
from maillage.common.geography import MAX_DEPARTEMENTS, is_departement_code


class PartnerKind(StrEnum):
    ENTREPRISE = "entreprise"
    ASSOCIATION = "association"
    COLLECTIVITE = "collectivite"
    ETABLISSEMENT_SUPERIEUR = "etablissement_superieur"
    LYCEE = "lycee"
    COLLEGE = "college"
    SERVICE_ETAT = "service_etat"
    CAF = "caf"
    AUTRE = "autre"


SCHOOL_KINDS = frozenset({PartnerKind.COLLEGE, PartnerKind.LYCEE})

# How the API's French texts name a kind of partner (the enum value stays the machine code).
KIND_NAMES: dict[PartnerKind, str] = {
    PartnerKind.ENTREPRISE: "une entreprise",
    PartnerKind.ASSOCIATION: "une association",
    PartnerKind.COLLECTIVITE: "une collectivité",
    PartnerKind.ETABLISSEMENT_SUPERIEUR: "un établissement d'enseignement supérieur",
    PartnerKind.LYCEE: "un lycée",
    PartnerKind.COLLEGE: "un collège",
    PartnerKind.SERVICE_ETAT: "un service de l'État",
    PartnerKind.CAF: "une caisse d'allocations familiales",
    PartnerKind.AUTRE: "un partenaire",
}


class PartnerStatus(StrEnum):
    PENDING = "pending"
    VERIFIED = "verified"
    REJECTED = "rejected"
    SUSPENDED = "suspended"


class Programme(StrEnum):
    CORDEES = "cordees"
    STAGES3E = "stages3e"
    FUNDING = "funding"


# Which status an operator may move a partner to, from each status, and the verb for it.
TRANSITIONS: dict[tuple[PartnerStatus, PartnerStatus], str] = {
    (PartnerStatus.PENDING, PartnerStatus.VERIFIED): "verify",
    (PartnerStatus.PENDING, PartnerStatus.REJECTED): "reject",
    (PartnerStatus.VERIFIED, PartnerStatus.SUSPENDED): "suspend",
    (PartnerStatus.SUSPENDED, PartnerStatus.VERIFIED): "reinstate",
}
TARGET_OF_VERB = {verb: target for (_, target), verb in TRANSITIONS.items()}


class Verb(StrEnum):
    """What an operator does to a partner's status."""

    VERIFY = "verify"
    REJECT = "reject"
    SUSPEND = "suspend"
    REINSTATE = "reinstate"


def can_transition(current: PartnerStatus, target: PartnerStatus) -> bool:
    return (current, target) in TRANSITIONS


# Every stored field of a partner and of its contacts, classified once (PRE charter levels):
# level 3 is public (what the Annuaire or the SIRENE register publish), level 2 is for the
# signatory institutions (verified partners and staff), level 1 identifies a person.
FIELD_LEVELS: dict[str, Level] = {
    "id": Level.PUBLIC,
    "kind": Level.PUBLIC,
    "legal_name": Level.PUBLIC,
    "status": Level.PUBLIC,
    "siret": Level.PUBLIC,
    "siren": Level.PUBLIC,
    "rna": Level.PUBLIC,
    "uai": Level.PUBLIC,
    "commune_code": Level.PUBLIC,
    "commune_name": Level.PUBLIC,
    "departement": Level.PUBLIC,
    "cites_educatives": Level.PUBLIC,
    "programmes": Level.PUBLIC,
    "education_prioritaire": Level.PUBLIC,
    "qpv_proximity": Level.PUBLIC,
    "qpv_code": Level.PUBLIC,
    "created_at": Level.PUBLIC,
    "version": Level.PUBLIC,
    "address": Level.PARTNERS,
    "postal_code": Level.PARTNERS,
    "latitude": Level.PARTNERS,
    "longitude": Level.PARTNERS,
    "pupils": Level.PARTNERS,
    "updated_at": Level.PARTNERS,
    "contacts": Level.NOMINATIVE,
}
CONTACT_FIELD_LEVELS: dict[str, Level] = {
    "id": Level.NOMINATIVE,
    "name": Level.NOMINATIVE,
    "role": Level.NOMINATIVE,
    "email": Level.NOMINATIVE,
    "phone": Level.NOMINATIVE,
}

_P, _S, _N = Level.PUBLIC, Level.PARTNERS, Level.NOMINATIVE

# Every column the registry stores, table by table (a test checks this against the database).
# Level 1 also covers what must never be shared at all: secrets, hashes, private keys.
STORED_FIELD_LEVELS: dict[str, dict[str, Level]] = {
    "partners": {k: v for k, v in FIELD_LEVELS.items() if k != "contacts"},
    "partner_contacts": {
        "id": _N,
        "partner_id": _S,
        "name": _N,
        "role": _N,
        "email": _N,
        "phone": _N,
        "position": _N,
    },
    "partner_status_history": {
        "id": _S,
        "partner_id": _S,
        "from_status": _S,
        "to_status": _S,
        "actor": _S,
        "reason": _S,
        "at": _S,
    },
    # The Annuaire de l'éducation is open data.
    "reference_schools": dict.fromkeys(
        (
            "uai",
            "name",
            "type",
            "public_private",
            "postal_code",
            "commune_code",
            "commune_name",
            "departement",
            "academie",
            "education_prioritaire",
            "education_prioritaire_source",
            "qpv_proximity",
            "qpv_code",
            "latitude",
            "longitude",
            "pupils",
            "updated_at",
            "version",
            "mail",
        ),
        _P,
    ),
    "api_clients": {
        "client_id": _S,
        "partner_id": _S,
        "name": _S,
        "secret_hash": _N,
        "created_at": _S,
        "last_used_at": _S,
        "revoked_at": _S,
    },
    "staff_accounts": {
        "id": _S,
        "email": _N,
        "password_hash": _N,
        "roles": _S,
        "departements": _S,
        "national": _S,
        "created_at": _S,
        "disabled_at": _S,
    },
    "registration_tokens": {
        "partner_id": _S,
        "token_hash": _N,
        "issued_by": _S,
        "issued_at": _S,
        "expires_at": _S,
        "used_up_at": _S,
    },
    "school_claims": {
        "id": _S,
        "partner_id": _S,
        "uai": _P,
        "mailbox": _P,  # the Annuaire's institutional address, never a person's
        "code_hash": _N,
        "attempts": _S,
        "created_at": _S,
        "expires_at": _S,
        "proven_at": _S,
        "closed_at": _S,
    },
    "signing_keys": {
        "kid": _P,
        "algorithm": _P,
        "private_pem": _N,
        "public_jwk": _P,
        "created_at": _P,
        "signs_from": _P,
        "retired_at": _P,
    },
    # maillage.common's tables, in this database too.
    "outbox": {  # events carry levels 2 and 3 only (the catalog refuses level 1)
        "id": _S,
        "event_id": _S,
        "topic": _S,
        "key": _S,
        "type": _S,
        "headers": _S,
        "payload": _S,
        "created_at": _S,
        "published_at": _S,
    },
    "outbox_dead_letters": {  # outbox rows the broker refused for good: the same levels
        "event_id": _S,
        "outbox_id": _S,
        "topic": _S,
        "key": _S,
        "type": _S,
        "headers": _S,
        "payload": _S,
        "created_at": _S,
        "error": _S,
        "set_aside_at": _S,
    },
    "inbox": {"consumer_group": _S, "event_id": _S, "event_type": _S, "processed_at": _S},
    "idempotency_keys": {  # a stored response may hold contacts
        "scope": _S,
        "key": _S,
        "request_hash": _S,
        "status_code": _S,
        "response": _N,
        "created_at": _S,
    },
    "schema_migrations": dict.fromkeys(
        ("component", "version", "name", "checksum", "applied_at"), _P
    ),
}

# Staff accounts: officer, ordonnateur and comptable are the three separated duties of programme
# 147 funding (décret 2012-1246, art. 9; docs/architecture.md, decision 45).
STAFF_ROLES = frozenset({"officer", "ordonnateur", "comptable", "operator", "admin"})
# Roles that run the platform everywhere: their accounts are always national (decision 64).
NATIONAL_ROLES = frozenset({"operator", "admin"})


class InvalidTerritory(ValueError):
    """A staff account's territory that cannot be kept; the message says why (English: CLI)."""


def staff_territory(
    roles: Iterable[str], departements: Iterable[str], *, national: bool
) -> tuple[list[str], bool]:
    """Where a staff account acts: (its département codes, sorted and unique; national).

    1. an operator or admin account is national, and names no département;
    2. a national account (``national``: a central administration) names no département;
    3. any other account names 1 to ``MAX_DEPARTEMENTS`` codes in INSEE form (94, 2A, 971).

    Raises :class:`InvalidTerritory` otherwise."""
    codes = sorted(set(departements))
    bad = [code for code in codes if not is_departement_code(code)]
    if bad:
        raise InvalidTerritory(f"not département codes (94, 2A, 971): {', '.join(bad)}")
    if national or not NATIONAL_ROLES.isdisjoint(roles):
        if codes:
            raise InvalidTerritory("a national account (operators and admins are) names none")
        return [], True
    if not codes:
        raise InvalidTerritory("a staff account acts for at least one département, or national")
    if len(codes) > MAX_DEPARTEMENTS:
        raise InvalidTerritory(f"at most {MAX_DEPARTEMENTS} départements; beyond, national")
    return codes, False


def clearance(
    *,
    roles: Iterable[str],
    caller_partner_id: str | None,
    caller_partner_verified: bool,
    partner_id: str,
) -> Level:
    """The most confidential level a caller may read of one partner (lower is more)."""
    roles = frozenset(roles)
    if caller_partner_id == partner_id or roles & {"operator", "admin"}:
        return Level.NOMINATIVE
    if roles & STAFF_ROLES or caller_partner_verified:
        return Level.PARTNERS
    return Level.PUBLIC


def visible(partner: Mapping[str, Any], level: Level) -> dict[str, Any]:
    """The fields of ``partner`` a caller with clearance ``level`` may read."""
    return {name: value for name, value in partner.items() if FIELD_LEVELS[name] >= level}


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class InvalidRegistration(ValueError):
    """Every problem of a registration at once, field by field."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


def identifier_errors(kind: PartnerKind, identifiers: Mapping[str, str | None]) -> list[FieldError]:
    """Which required identifier is missing for ``kind`` (see ``identifiers.REQUIRED``)."""
    from maillage.registry.identifiers import required_identifiers

    errors = []
    for alternatives in required_identifiers(kind):
        if not any(identifiers.get(name) for name in alternatives):
            names = " ou ".join(name.upper() for name in sorted(alternatives))
            first = sorted(alternatives)[0]
            who = KIND_NAMES[kind]
            errors.append(
                FieldError(first, f"{who[0].upper()}{who[1:]} s'inscrit avec son {names}.")
            )
    return errors


# What the Annuaire de l'éducation says of a school overrides what the school declared; REP
# status and pupil count are never declared at all.
REFERENCE_FIELDS = (
    "postal_code",
    "commune_code",
    "commune_name",
    "departement",
    "latitude",
    "longitude",
)
REFERENCE_ONLY_FIELDS = ("education_prioritaire", "pupils", "qpv_proximity", "qpv_code")


def facts_from_reference(school: Mapping[str, Any] | Any) -> dict[str, Any]:
    """The partner fields a reference school (a mapping or a record) provides."""
    values = school if isinstance(school, Mapping) else dataclasses.asdict(school)
    facts = {name: values.get(name) for name in REFERENCE_ONLY_FIELDS}
    facts.update({name: values[name] for name in REFERENCE_FIELDS if values.get(name) is not None})
    return facts
