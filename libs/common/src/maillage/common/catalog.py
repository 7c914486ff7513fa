"""The catalog of Maillage: every topic, and every event type with its confidentiality levels.

Topics are ``<service>.<aggregate>``, one per producing aggregate, keyed by the aggregate id so
that the events of one aggregate stay in order. A service's event types are registered here,
next to each other, so that every consumer (in any service) reads the same definitions.
JSON Schema snapshots of every type live in ``libs/common/event-schemas/``.
"""

from __future__ import annotations

from maillage.common.events import Catalog

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
