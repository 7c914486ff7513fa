from maillage.registry.domain import PartnerStatus, can_transition


def test_only_operators_paths_between_statuses_are_allowed() -> None:
    assert can_transition(PartnerStatus.PENDING, PartnerStatus.VERIFIED)
    assert can_transition(PartnerStatus.PENDING, PartnerStatus.REJECTED)
    assert can_transition(PartnerStatus.VERIFIED, PartnerStatus.SUSPENDED)
    assert can_transition(PartnerStatus.SUSPENDED, PartnerStatus.VERIFIED)
    # A rejected partner registers again; it is never revived, and nothing skips verification.
    assert not can_transition(PartnerStatus.REJECTED, PartnerStatus.VERIFIED)
    assert not can_transition(PartnerStatus.PENDING, PartnerStatus.SUSPENDED)


def test_clearance_follows_the_charter() -> None:
    from maillage.common.events import Level
    from maillage.registry.domain import FIELD_LEVELS, clearance, visible

    def level(**kwargs: object) -> Level:
        base: dict[str, object] = {
            "roles": ["partner"],
            "caller_partner_id": "p2",
            "caller_partner_verified": False,
            "partner_id": "p1",
        }
        base.update(kwargs)
        return clearance(**base)  # type: ignore[arg-type]

    assert level() is Level.PUBLIC
    assert level(caller_partner_verified=True) is Level.PARTNERS
    assert level(roles=["officer"], caller_partner_id=None) is Level.PARTNERS
    assert level(caller_partner_id="p1") is Level.NOMINATIVE
    assert level(roles=["operator"], caller_partner_id=None) is Level.NOMINATIVE
    partner = dict.fromkeys(FIELD_LEVELS, "x")
    assert "contacts" not in visible(partner, Level.PARTNERS)
    assert "latitude" in visible(partner, Level.PARTNERS)
    assert "latitude" not in visible(partner, Level.PUBLIC)
    assert set(visible(partner, Level.NOMINATIVE)) == set(FIELD_LEVELS)


def test_reference_facts_override_declarations_and_rep_status_is_never_declared() -> None:
    from maillage.registry.domain import facts_from_reference

    facts = facts_from_reference(
        {"commune_code": "94054", "education_prioritaire": "REP+", "pupils": 412, "latitude": None}
    )
    assert facts == {
        "education_prioritaire": "REP+",
        "pupils": 412,
        "qpv_proximity": None,
        "qpv_code": None,
        "commune_code": "94054",
    }
    assert facts_from_reference({})["education_prioritaire"] is None
