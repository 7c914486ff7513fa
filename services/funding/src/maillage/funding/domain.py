"""Pure rules of programme 147 funding: no I/O, no framework.

A grant above 23,000 EUR needs a convention (below, an arrêté attributif). A convention is paid
in tranches: an advance, then further tranches against a compte-rendu financier.
"""

from decimal import Decimal
from enum import StrEnum

CONVENTION_THRESHOLD_EUR = Decimal("23000")


class TrancheStatus(StrEnum):
    PLANNED = "planned"
    REQUESTED = "requested"
    APPROVED = "approved"
    PAID = "paid"


def requires_convention(amount_eur: Decimal) -> bool:
    """A grant strictly above the threshold requires a convention."""
    return amount_eur > CONVENTION_THRESHOLD_EUR
