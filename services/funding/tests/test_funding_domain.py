from decimal import Decimal

from maillage.funding.domain import requires_convention


def test_a_convention_is_required_strictly_above_23000_eur() -> None:
    assert not requires_convention(Decimal("23000"))
    assert requires_convention(Decimal("23000.01"))
    assert requires_convention(Decimal("475000"))
