"""Pure rules of the registre des partenaires: no I/O, no framework.

A partner organisation registers (``pending``), an operator verifies or rejects it, and a verified
partner can be suspended and reinstated without ever being deleted.
"""

from enum import StrEnum


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


class PartnerStatus(StrEnum):
    PENDING = "pending"
    VERIFIED = "verified"
    REJECTED = "rejected"
    SUSPENDED = "suspended"


# Which status an operator may move a partner to, from each status.
TRANSITIONS: dict[PartnerStatus, frozenset[PartnerStatus]] = {
    PartnerStatus.PENDING: frozenset({PartnerStatus.VERIFIED, PartnerStatus.REJECTED}),
    PartnerStatus.VERIFIED: frozenset({PartnerStatus.SUSPENDED}),
    PartnerStatus.SUSPENDED: frozenset({PartnerStatus.VERIFIED}),
    PartnerStatus.REJECTED: frozenset(),
}


def can_transition(current: PartnerStatus, target: PartnerStatus) -> bool:
    return target in TRANSITIONS[current]
