"""The catalog of Maillage: every topic, and every event type with its confidentiality levels.

Topics are ``<service>.<aggregate>``, one per producing aggregate, keyed by the aggregate id so
that the events of one aggregate stay in order. A service's event types are registered here,
next to each other, so that every consumer (in any service) reads the same definitions.
JSON Schema snapshots of every type live in ``libs/common/event-schemas/``.
"""

from __future__ import annotations

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
CONVENTIONS = catalog.topic("funding.conventions", partitions=6, description="P147 conventions")
TRANCHES = catalog.topic(
    "funding.tranches", partitions=6, description="Tranches: requested, approved, paid"
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
    """A partner organisation registered (pending verification, or verified by its UAI)."""


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
