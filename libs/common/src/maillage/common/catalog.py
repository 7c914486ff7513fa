"""The catalog of Maillage: every topic, and every event type with its confidentiality levels.

Topics are ``<service>.<aggregate>``, one per producing aggregate, keyed by the aggregate id so
that the events of one aggregate stay in order. A service's event types are registered here,
next to each other, so that every consumer (in any service) reads the same definitions.
JSON Schema snapshots of every type live in ``libs/common/event-schemas/``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from maillage.common.events import Catalog, Event, Level

catalog = Catalog()

# registry: the registre des partenaires
PARTNERS = catalog.topic(
    "registry.partners",
    partitions=6,
    description="Partner organisations: registration, verification, updates, suspension",
)
SCHOOLS = catalog.topic(
    "registry.schools",
    partitions=6,
    description="Reference schools: the Annuaire de l'éducation and their éducation prioritaire",
)
SCHOOL_CLAIMS = catalog.topic(
    "registry.school-claims",
    partitions=6,
    description="One-time codes for a school's institutional mailbox (read by notifications only)",
)

# cordees: Cordées de la réussite
CORDEE_OFFERS = catalog.topic(
    "cordees.offers", partitions=6, description="Cordée offers opened by têtes de cordée"
)
MATCH_REQUESTS = catalog.topic(
    "cordees.match-requests", partitions=6, description="Match requests of collèges and lycées"
)
PAIRINGS = catalog.topic(
    "cordees.pairings", partitions=6, description="Pairings of a tête de cordée and an encordé"
)

# stages3e: stages de 3e
STAGE_OFFERS = catalog.topic(
    "stages3e.offers", partitions=6, description="One-week observation internship offers"
)
STAGE_APPLICATIONS = catalog.topic(
    "stages3e.applications", partitions=6, description="Applications by schools for their pupils"
)

# funding: programme 147 conventions and tranches
CONVENTIONS = catalog.topic(
    "funding.conventions",
    partitions=6,
    description="P147 conventions: programmed, signed, closed; comptes-rendus, reversements",
)
TRANCHES = catalog.topic(
    "funding.tranches", partitions=6, description="Tranches: requested, approved, paid, rejected"
)


# --- registry events ----------------------------------------------------------------------------


class PartnerFacts(Event):
    """What the ecosystem may know of a partner: levels 2 and 3 only, never its contacts."""

    partner_id: Annotated[UUID, Level.PUBLIC]
    kind: Annotated[str, Level.PUBLIC]
    legal_name: Annotated[str, Level.PUBLIC]
    status: Annotated[str, Level.PUBLIC]
    version: Annotated[int, Level.PUBLIC]
    siret: Annotated[str | None, Level.PUBLIC] = None
    rna: Annotated[str | None, Level.PUBLIC] = None
    uai: Annotated[str | None, Level.PUBLIC] = None
    commune_code: Annotated[str | None, Level.PUBLIC] = None
    commune_name: Annotated[str | None, Level.PUBLIC] = None
    departement: Annotated[str | None, Level.PUBLIC] = None
    latitude: Annotated[float | None, Level.PARTNERS] = None
    longitude: Annotated[float | None, Level.PARTNERS] = None
    education_prioritaire: Annotated[str | None, Level.PUBLIC] = None
    qpv_proximity: Annotated[bool | None, Level.PUBLIC] = None
    qpv_code: Annotated[str | None, Level.PUBLIC] = None
    pupils: Annotated[int | None, Level.PARTNERS] = None
    cites_educatives: Annotated[tuple[str, ...], Level.PUBLIC] = ()
    programmes: Annotated[tuple[str, ...], Level.PUBLIC] = ()


@catalog.event("fr.maillage.registry.partner.registered.v1", topic=PARTNERS, key="partner_id")
class PartnerRegistered(PartnerFacts):
    """A partner organisation registered (pending: an operator, or for a school the code sent to
    its institutional mailbox, verifies it)."""


@catalog.event("fr.maillage.registry.partner.verified.v1", topic=PARTNERS, key="partner_id")
class PartnerVerified(PartnerFacts):
    """An operator verified a partner, or reinstated a suspended one."""


@catalog.event("fr.maillage.registry.partner.updated.v1", topic=PARTNERS, key="partner_id")
class PartnerUpdated(PartnerFacts):
    """A partner changed its record."""


@catalog.event("fr.maillage.registry.partner.suspended.v1", topic=PARTNERS, key="partner_id")
class PartnerSuspended(PartnerFacts):
    """An operator suspended a verified partner."""


@catalog.event("fr.maillage.registry.partner.rejected.v1", topic=PARTNERS, key="partner_id")
class PartnerRejected(PartnerFacts):
    """An operator rejected a pending registration."""


@catalog.event("fr.maillage.registry.school.referenced.v1", topic=SCHOOLS, key="uai")
class SchoolReferenced(Event):
    """A school of the reference data (Annuaire de l'éducation, éducation prioritaire list), new
    or changed in one of these fields. Public data, published by the import; ``version`` grows
    with each change of a school, so a consumer keeps only the newest."""

    uai: Annotated[str, Level.PUBLIC]
    name: Annotated[str, Level.PUBLIC]
    type: Annotated[str, Level.PUBLIC]  # type_etablissement: "Collège", "Lycée", "Ecole"...
    public_private: Annotated[str | None, Level.PUBLIC] = None  # "public" | "prive"
    departement: Annotated[str | None, Level.PUBLIC] = None  # INSEE form: "94", "2A", "971"
    academie: Annotated[str | None, Level.PUBLIC] = None  # code_academie: "24" is Créteil
    commune_code: Annotated[str | None, Level.PUBLIC] = None
    commune_name: Annotated[str | None, Level.PUBLIC] = None
    education_prioritaire: Annotated[str | None, Level.PUBLIC] = None  # "REP" | "REP+"
    qpv_proximity: Annotated[bool | None, Level.PUBLIC] = None
    qpv_code: Annotated[str | None, Level.PUBLIC] = None
    latitude: Annotated[float | None, Level.PARTNERS] = None
    longitude: Annotated[float | None, Level.PARTNERS] = None
    version: Annotated[int, Level.PUBLIC]


@catalog.event(
    "fr.maillage.registry.school-claim.code-issued.v1", topic=SCHOOL_CLAIMS, key="claim_id"
)
class SchoolClaimCodeIssued(Event):
    """Superseded by ``school-claim.code-issued.v2``, which carries the code sealed: no longer
    published (decision 63). Notifications still mails the records written before the upgrade
    (a code lives a day).

    A collège or lycée registered: a one-time code goes to the school's institutional mailbox
    (the Annuaire's ``Mail`` column, never an address the registrant typed); whoever reads that
    mailbox sends it back to the registry, which then verifies the school (decision 41).

    The code is a secret for one mailbox, for a day, tried five times at most; the registry keeps
    only its hash. This topic is read by notifications only, which mails it and logs nothing of
    it; no webhook or partner ever hears of this event."""

    claim_id: Annotated[UUID, Level.PUBLIC]
    partner_id: Annotated[UUID, Level.PUBLIC]
    uai: Annotated[str, Level.PUBLIC]
    school_name: Annotated[str, Level.PUBLIC]
    mailbox: Annotated[str, Level.PUBLIC]  # institutional and published: not a person's
    legal_name: Annotated[str, Level.PUBLIC]  # what the registrant called the school
    code: Annotated[str, Level.PARTNERS]
    expires_at: Annotated[datetime, Level.PUBLIC]


@catalog.event(
    "fr.maillage.registry.school-claim.code-issued.v2", topic=SCHOOL_CLAIMS, key="claim_id"
)
class SchoolClaimCodeSealed(Event):
    """A collège or lycée registered: a one-time code goes to the school's institutional mailbox
    (the Annuaire's ``Mail`` column, never an address the registrant typed); whoever reads that
    mailbox sends it back to the registry, which then verifies the school (decisions 41, 63).

    The code travels sealed for the notifications service alone (``maillage.common.sealing``:
    HPKE to notifications' X25519 public key, bound to :func:`school_claim_seal_context`): a
    reader of this topic, of its backups or of the registry's outbox learns nothing usable as
    proof. The registry keeps only the code's hash; notifications opens it, mails it and logs
    nothing of it; a code it cannot open is dead-lettered. No webhook or partner hears of it."""

    claim_id: Annotated[UUID, Level.PUBLIC]
    partner_id: Annotated[UUID, Level.PUBLIC]
    uai: Annotated[str, Level.PUBLIC]
    school_name: Annotated[str, Level.PUBLIC]
    mailbox: Annotated[str, Level.PUBLIC]  # institutional and published: not a person's
    legal_name: Annotated[str, Level.PUBLIC]  # what the registrant called the school
    sealed_code: Annotated[str, Level.PUBLIC]  # "<key id>.<base64url>": opens only with the key
    expires_at: Annotated[datetime, Level.PUBLIC]


def school_claim_seal_context(claim_id: UUID, partner_id: UUID, mailbox: str) -> bytes:
    """What a sealed claim code is bound to: copied into another claim, or with its mailbox
    changed to another address, it does not open."""
    return (
        b"fr.maillage.registry.school-claim.code-issued.v2\x00"
        + claim_id.bytes
        + partner_id.bytes
        + mailbox.encode("utf-8", "surrogatepass")
    )


# --- cordees events -----------------------------------------------------------------------------
# Schools and têtes de cordée appear by their partner ids (level 3: partners are public); a school's
# pupils never appear, only the number of encordés a cordée can take.


class CordeeOfferFacts(Event):
    """A tête de cordée's offer: how many encordés, which levels and thematics, which territory."""

    offer_id: Annotated[UUID, Level.PUBLIC]
    tete_partner_id: Annotated[UUID, Level.PUBLIC]
    school_year: Annotated[str, Level.PUBLIC]  # "2026-2027"
    capacity: Annotated[int, Level.PUBLIC]
    levels: Annotated[tuple[str, ...], Level.PUBLIC]  # "4e", "3e", "2nde", "1re", "terminale"
    thematics: Annotated[tuple[str, ...], Level.PUBLIC]
    max_distance_km: Annotated[float | None, Level.PUBLIC] = None
    academies: Annotated[tuple[str, ...], Level.PUBLIC] = ()
    status: Annotated[str, Level.PUBLIC]  # "open", "closed"
    version: Annotated[int, Level.PUBLIC]


@catalog.event("fr.maillage.cordees.offer.opened.v1", topic=CORDEE_OFFERS, key="offer_id")
class CordeeOfferOpened(CordeeOfferFacts):
    """A tête de cordée opened a cordée offer."""


@catalog.event("fr.maillage.cordees.offer.updated.v1", topic=CORDEE_OFFERS, key="offer_id")
class CordeeOfferUpdated(CordeeOfferFacts):
    """A tête de cordée changed an open offer (capacity, levels, thematics, territory)."""


@catalog.event("fr.maillage.cordees.offer.closed.v1", topic=CORDEE_OFFERS, key="offer_id")
class CordeeOfferClosed(CordeeOfferFacts):
    """A tête de cordée closed an offer: no new proposals; established pairings go on."""


class MatchRequestFacts(Event):
    """A school's request for a cordée, and where it stands."""

    request_id: Annotated[UUID, Level.PUBLIC]
    school_partner_id: Annotated[UUID, Level.PUBLIC]
    school_year: Annotated[str, Level.PUBLIC]
    status: Annotated[str, Level.PUBLIC]  # requested, proposed, unmatched, withdrawn, established
    priority_class: Annotated[str, Level.PUBLIC]  # "REP+", "REP", "QPV_OR_RURAL", "OTHER"


@catalog.event(
    "fr.maillage.cordees.match-request.requested.v1", topic=MATCH_REQUESTS, key="request_id"
)
class MatchRequested(MatchRequestFacts):
    """A collège or lycée asked for a cordée."""

    thematics: Annotated[tuple[str, ...], Level.PUBLIC] = ()
    max_distance_km: Annotated[float | None, Level.PUBLIC] = None


class MatchProposalFacts(MatchRequestFacts):
    """A request together with the offer it is (or was) proposed."""

    offer_id: Annotated[UUID, Level.PUBLIC]
    tete_partner_id: Annotated[UUID, Level.PUBLIC]


@catalog.event(
    "fr.maillage.cordees.match-request.proposed.v1", topic=MATCH_REQUESTS, key="request_id"
)
class MatchProposed(MatchProposalFacts):
    """The matcher proposed a tête de cordée to a school; the tête accepts or declines. When the
    proposal moved from another offer, ``previous_offer_id`` and ``previous_tete_partner_id``
    name it (that tête is told too) and ``reason`` says what moved it."""

    score: Annotated[float, Level.PUBLIC]
    distance_km: Annotated[float, Level.PUBLIC]
    rank: Annotated[int, Level.PUBLIC]  # 1 for the first proposal, 2 after one decline…
    # why the live flow (re)solved: MATCH_REASONS of the cordees service, e.g. "request_filed",
    # "declined", "expired", "request_withdrawn", "offer_changed", "campaign"
    reason: Annotated[str, Level.PUBLIC] = "request_filed"
    previous_offer_id: Annotated[UUID | None, Level.PUBLIC] = None
    previous_tete_partner_id: Annotated[UUID | None, Level.PUBLIC] = None


@catalog.event(
    "fr.maillage.cordees.match-request.declined.v1", topic=MATCH_REQUESTS, key="request_id"
)
class MatchDeclined(MatchProposalFacts):
    """The tête de cordée declined the proposal, or left it unanswered until it expired
    (``reason`` "expired"); the next candidate is proposed, if any."""

    reason: Annotated[str, Level.PUBLIC] = "declined"  # "declined" or "expired"


@catalog.event(
    "fr.maillage.cordees.match-request.withdrawn.v1", topic=MATCH_REQUESTS, key="request_id"
)
class MatchWithdrawn(MatchRequestFacts):
    """The school withdrew its request."""

    offer_id: Annotated[UUID | None, Level.PUBLIC] = None
    tete_partner_id: Annotated[UUID | None, Level.PUBLIC] = None


@catalog.event(
    "fr.maillage.cordees.match-request.unmatched.v1", topic=MATCH_REQUESTS, key="request_id"
)
class MatchUnmatched(MatchRequestFacts):
    """No open offer can take the request now; it waits until a place it may take frees up.
    When it lost a proposal, ``previous_offer_id`` and ``previous_tete_partner_id`` name it
    (that tête is told too) and ``reason`` says what moved it (as for MatchProposed)."""

    reason: Annotated[str, Level.PUBLIC] = "request_filed"
    previous_offer_id: Annotated[UUID | None, Level.PUBLIC] = None
    previous_tete_partner_id: Annotated[UUID | None, Level.PUBLIC] = None


class PairingFacts(Event):
    """An encordé school paired with a tête de cordée's offer for a school year."""

    pairing_id: Annotated[UUID, Level.PUBLIC]
    request_id: Annotated[UUID, Level.PUBLIC]
    offer_id: Annotated[UUID, Level.PUBLIC]
    tete_partner_id: Annotated[UUID, Level.PUBLIC]
    school_partner_id: Annotated[UUID, Level.PUBLIC]
    school_year: Annotated[str, Level.PUBLIC]


@catalog.event("fr.maillage.cordees.pairing.established.v1", topic=PAIRINGS, key="pairing_id")
class PairingEstablished(PairingFacts):
    """The tête de cordée accepted: the school is encordé."""


@catalog.event("fr.maillage.cordees.pairing.ended.v1", topic=PAIRINGS, key="pairing_id")
class PairingEnded(PairingFacts):
    """A pairing ended: at the school year's end, or at the request of the tête or the school."""

    reason: Annotated[str, Level.PUBLIC]  # "school_year_end", "tete_request", "school_request"


# --- stages3e events ----------------------------------------------------------------------------
# Pupils are minors: applications name no pupil; the school's own opaque reference stays in the
# stages3e database.


class StageOfferFacts(Event):
    """A stage de 3e offer by a partner: where, when, how many places. ``week_start`` is the
    Monday of its first week and ``places`` the seats of all its weeks; ``weeks`` lists them
    (ISO weeks, ``2027-W05``) and ``reserved_places`` the seats kept for pupils of REP+/REP
    collèges or collèges near a QPV until 14 days before each week."""

    offer_id: Annotated[UUID, Level.PUBLIC]
    partner_id: Annotated[UUID, Level.PUBLIC]
    title: Annotated[str, Level.PUBLIC]
    sector: Annotated[str | None, Level.PUBLIC] = None  # ONISEP GFE code, "A" to "W"
    week_start: Annotated[str, Level.PUBLIC]  # ISO date of the first week's Monday
    places: Annotated[int, Level.PUBLIC]
    commune_code: Annotated[str | None, Level.PUBLIC] = None
    departement: Annotated[str | None, Level.PUBLIC] = None
    latitude: Annotated[float | None, Level.PARTNERS] = None
    longitude: Annotated[float | None, Level.PARTNERS] = None
    # "published", "unpublished", "withdrawn", "closed"
    status: Annotated[str, Level.PUBLIC]
    weeks: Annotated[tuple[str, ...], Level.PUBLIC] = ()
    reserved_places: Annotated[int, Level.PUBLIC] = 0
    school_year: Annotated[str | None, Level.PUBLIC] = None  # "2026-2027"
    version: Annotated[int | None, Level.PUBLIC] = None


@catalog.event("fr.maillage.stages3e.offer.published.v1", topic=STAGE_OFFERS, key="offer_id")
class StageOfferPublished(StageOfferFacts):
    """A partner published a stage de 3e offer (or published again an unpublished one)."""


@catalog.event("fr.maillage.stages3e.offer.updated.v1", topic=STAGE_OFFERS, key="offer_id")
class StageOfferUpdated(StageOfferFacts):
    """A partner changed its offer (never below the seats already held)."""


@catalog.event("fr.maillage.stages3e.offer.unpublished.v1", topic=STAGE_OFFERS, key="offer_id")
class StageOfferUnpublished(StageOfferFacts):
    """A partner took its offer out of search; its applications go on."""


@catalog.event("fr.maillage.stages3e.offer.withdrawn.v1", topic=STAGE_OFFERS, key="offer_id")
class StageOfferWithdrawn(StageOfferFacts):
    """A partner withdrew its offer; its live applications are cancelled."""


@catalog.event("fr.maillage.stages3e.offer.closed.v1", topic=STAGE_OFFERS, key="offer_id")
class StageOfferClosed(StageOfferFacts):
    """The offer closed by itself: its last week has begun, or every seat is held."""

    reason: Annotated[str, Level.PUBLIC]  # "past", "full"


class StageApplicationFacts(Event):
    """A school's application for one of its pupils, named by no one on the bus: the pupil's
    reference stays in the stages3e database."""

    application_id: Annotated[UUID, Level.PUBLIC]
    offer_id: Annotated[UUID, Level.PUBLIC]
    offer_partner_id: Annotated[UUID, Level.PUBLIC]
    school_partner_id: Annotated[UUID, Level.PUBLIC]
    # "submitted", "accepted", "confirmed", "declined", "withdrawn", "cancelled", "expired"
    status: Annotated[str, Level.PUBLIC]
    week: Annotated[str | None, Level.PUBLIC] = None  # ISO week, "2027-W05"
    school_year: Annotated[str | None, Level.PUBLIC] = None


@catalog.event(
    "fr.maillage.stages3e.application.submitted.v1", topic=STAGE_APPLICATIONS, key="application_id"
)
class StageApplicationSubmitted(StageApplicationFacts):
    """A school applied to an offer for one of its pupils."""


@catalog.event(
    "fr.maillage.stages3e.application.accepted.v1", topic=STAGE_APPLICATIONS, key="application_id"
)
class StageApplicationAccepted(StageApplicationFacts):
    """The offering partner accepted the application: a seat of the week is held."""


@catalog.event(
    "fr.maillage.stages3e.application.declined.v1", topic=STAGE_APPLICATIONS, key="application_id"
)
class StageApplicationDeclined(StageApplicationFacts):
    """The offering partner declined the application."""


@catalog.event(
    "fr.maillage.stages3e.application.confirmed.v1", topic=STAGE_APPLICATIONS, key="application_id"
)
class StageApplicationConfirmed(StageApplicationFacts):
    """The school confirmed the stage for the pupil and the family; the pupil's other live
    applications are withdrawn."""


@catalog.event(
    "fr.maillage.stages3e.application.withdrawn.v1", topic=STAGE_APPLICATIONS, key="application_id"
)
class StageApplicationWithdrawn(StageApplicationFacts):
    """The school withdrew the application (or confirmed another stage for the pupil)."""

    reason: Annotated[str, Level.PUBLIC]  # "school_request", "other_stage_confirmed"


@catalog.event(
    "fr.maillage.stages3e.application.cancelled.v1", topic=STAGE_APPLICATIONS, key="application_id"
)
class StageApplicationCancelled(StageApplicationFacts):
    """The offering partner cancelled an accepted or confirmed stage, or withdrew the offer."""

    reason: Annotated[str, Level.PUBLIC]  # domain.CANCEL_REASONS


@catalog.event(
    "fr.maillage.stages3e.application.expired.v1", topic=STAGE_APPLICATIONS, key="application_id"
)
class StageApplicationExpired(StageApplicationFacts):
    """No answer from the host within 15 days, or no confirmation within 7 days of acceptance:
    the application expired and its seat, if any, is free again."""


# --- funding events -----------------------------------------------------------------------------
# Public money: amounts, beneficiaries and co-financers are public (level 3); officers' names
# are not on the bus.


class ConventionFacts(Event):
    """A programme 147 convention: who receives, who co-finances, how much, over which years."""

    convention_id: Annotated[UUID, Level.PUBLIC]
    beneficiary_partner_id: Annotated[UUID, Level.PUBLIC]
    cofinancer_partner_ids: Annotated[tuple[UUID, ...], Level.PUBLIC] = ()
    cite_educative: Annotated[str | None, Level.PUBLIC] = None
    amount_cents: Annotated[int, Level.PUBLIC]  # euros × 100
    first_year: Annotated[int, Level.PUBLIC]
    last_year: Annotated[int, Level.PUBLIC]
    status: Annotated[str, Level.PUBLIC]


@catalog.event(
    "fr.maillage.funding.convention.programmed.v1", topic=CONVENTIONS, key="convention_id"
)
class ConventionProgrammed(ConventionFacts):
    """The comité de pilotage programmed the convention (recorded by the ordonnateur)."""

    committee_date: Annotated[str, Level.PUBLIC]  # ISO date of the comité's decision


@catalog.event("fr.maillage.funding.convention.signed.v1", topic=CONVENTIONS, key="convention_id")
class ConventionSigned(ConventionFacts):
    """A funding officer recorded a signed convention."""


@catalog.event(
    "fr.maillage.funding.convention.cancelled.v1", topic=CONVENTIONS, key="convention_id"
)
class ConventionCancelled(ConventionFacts):
    """The ordonnateur cancelled the convention before it was signed."""


@catalog.event("fr.maillage.funding.convention.closed.v1", topic=CONVENTIONS, key="convention_id")
class ConventionClosed(ConventionFacts):
    """The ordonnateur closed the signed convention: nothing more is paid under it."""


class ReportFacts(Event):
    """A compte-rendu financier (CERFA 15059) for one year of a convention: how much was spent."""

    report_id: Annotated[UUID, Level.PUBLIC]
    convention_id: Annotated[UUID, Level.PUBLIC]
    beneficiary_partner_id: Annotated[UUID, Level.PUBLIC]
    cofinancer_partner_ids: Annotated[tuple[UUID, ...], Level.PUBLIC] = ()
    year: Annotated[int, Level.PUBLIC]
    spent_cents: Annotated[int, Level.PUBLIC]
    status: Annotated[str, Level.PUBLIC]  # "filed", "accepted", "changes_requested"


@catalog.event("fr.maillage.funding.report.filed.v1", topic=CONVENTIONS, key="convention_id")
class ReportFiled(ReportFacts):
    """The beneficiary filed its compte-rendu financier for a year."""


@catalog.event("fr.maillage.funding.report.accepted.v1", topic=CONVENTIONS, key="convention_id")
class ReportAccepted(ReportFacts):
    """A funding officer accepted the compte-rendu financier; the year's balance may be asked."""

    due_back_cents: Annotated[int, Level.PUBLIC]  # 0 when nothing is due back


@catalog.event("fr.maillage.funding.reversement.ordered.v1", topic=CONVENTIONS, key="convention_id")
class ReversementOrdered(Event):
    """An accepted compte-rendu showed an unspent amount: the beneficiary owes it back."""

    reversement_id: Annotated[UUID, Level.PUBLIC]
    convention_id: Annotated[UUID, Level.PUBLIC]
    beneficiary_partner_id: Annotated[UUID, Level.PUBLIC]
    cofinancer_partner_ids: Annotated[tuple[UUID, ...], Level.PUBLIC] = ()
    year: Annotated[int, Level.PUBLIC]
    amount_cents: Annotated[int, Level.PUBLIC]


class TrancheFacts(Event):
    """A tranche of a convention: an advance, or a payment against a compte-rendu financier."""

    tranche_id: Annotated[UUID, Level.PUBLIC]
    convention_id: Annotated[UUID, Level.PUBLIC]
    beneficiary_partner_id: Annotated[UUID, Level.PUBLIC]
    cofinancer_partner_ids: Annotated[tuple[UUID, ...], Level.PUBLIC] = ()
    number: Annotated[int, Level.PUBLIC]
    amount_cents: Annotated[int, Level.PUBLIC]
    status: Annotated[str, Level.PUBLIC]  # "requested", "approved", "paid", "rejected"


@catalog.event("fr.maillage.funding.tranche.requested.v1", topic=TRANCHES, key="tranche_id")
class TrancheRequested(TrancheFacts):
    """The beneficiary asked for a tranche."""


@catalog.event("fr.maillage.funding.tranche.approved.v1", topic=TRANCHES, key="tranche_id")
class TrancheApproved(TrancheFacts):
    """A funding officer approved the tranche."""


@catalog.event("fr.maillage.funding.tranche.paid.v1", topic=TRANCHES, key="tranche_id")
class TranchePaid(TrancheFacts):
    """A funding officer recorded the payment of the tranche."""


@catalog.event("fr.maillage.funding.tranche.rejected.v1", topic=TRANCHES, key="tranche_id")
class TrancheRejected(TrancheFacts):
    """The ordonnateur rejected the requested tranche; the beneficiary may ask again."""
