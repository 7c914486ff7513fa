from maillage.registry.domain import PartnerStatus, can_transition


def test_only_operators_paths_between_statuses_are_allowed() -> None:
    assert can_transition(PartnerStatus.PENDING, PartnerStatus.VERIFIED)
    assert can_transition(PartnerStatus.PENDING, PartnerStatus.REJECTED)
    assert can_transition(PartnerStatus.VERIFIED, PartnerStatus.SUSPENDED)
    assert can_transition(PartnerStatus.SUSPENDED, PartnerStatus.VERIFIED)
    # A rejected partner registers again; it is never revived, and nothing skips verification.
    assert not can_transition(PartnerStatus.REJECTED, PartnerStatus.VERIFIED)
    assert not can_transition(PartnerStatus.PENDING, PartnerStatus.SUSPENDED)
