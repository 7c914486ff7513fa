"""The pure rules of funding: the 23,000 EUR rule, plans, schedules, states, separated duties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maillage.funding import domain
from maillage.funding.domain import (
    ACTION_ROLES,
    NEVER_THE_SAME,
    LegalAct,
    NotAllowed,
    SeparationOfDuties,
    WrongRole,
)

amounts = st.lists(st.integers(min_value=1, max_value=10**10), min_size=1, max_size=4)
actors = st.sampled_from(["alice", "bruno", "chloe", "david"])


@pytest.mark.parametrize(
    ("cents", "act"),
    [
        (2_299_999, LegalAct.ARRETE_ATTRIBUTIF),
        (2_300_000, LegalAct.ARRETE_ATTRIBUTIF),
        (2_300_001, LegalAct.CONVENTION),
    ],
)
def test_a_convention_is_required_strictly_above_23000_eur_a_year(cents: int, act: str) -> None:
    assert domain.legal_act([cents]) == act
    assert domain.legal_act([100, cents]) == act
    assert domain.requires_convention(cents) == (act == LegalAct.CONVENTION)


def test_the_plan_difference_names_what_is_missing_or_too_much() -> None:
    assert domain.plan_difference(10_000, [6_000], [4_000]) == 0
    assert domain.plan_difference(10_000, [6_000], [3_000]) == 1_000
    assert domain.plan_difference(10_000, [6_000, 1_000], [4_000]) == -1_000


@settings(max_examples=200)
@given(amounts, st.integers(min_value=0, max_value=50), st.integers(2020, 2040))
def test_a_schedule_pays_each_year_exactly_its_amount(
    yearly: list[int], advance_percent: int, first_year: int
) -> None:
    tranches = domain.schedule(first_year, yearly, advance_percent)
    assert [t.number for t in tranches] == list(range(1, len(tranches) + 1))
    for offset, amount in enumerate(yearly):
        of_year = [t for t in tranches if t.year == first_year + offset]
        assert sum(t.amount_cents for t in of_year) == amount
        assert all(t.amount_cents > 0 for t in of_year)
        advances = [t.amount_cents for t in of_year if t.kind == "advance"]
        assert sum(advances) * 100 <= amount * advance_percent


def test_the_default_schedule_is_half_at_signature_and_the_balance_after_the_report() -> None:
    assert [(t.year, t.kind, t.amount_cents) for t in domain.schedule(2027, [3_000_001], 50)] == [
        (2027, "advance", 1_500_000),
        (2027, "balance", 1_500_001),
    ]
    with pytest.raises(ValueError, match="advance_percent"):
        domain.schedule(2027, [100], 51)


@settings(max_examples=200)
@given(st.integers(1, 10**9), st.integers(0, 10**9), st.integers(-10, 10**9))
def test_a_payment_never_takes_a_convention_beyond_its_amount(
    total: int, paid: int, amount: int
) -> None:
    if domain.can_pay(total, paid, amount):
        assert paid + amount <= total
        assert amount > 0


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(list(ACTION_ROLES)), actors), max_size=8), actors)
def test_whoever_instructed_never_approves_signs_or_pays_and_the_approver_never_pays(
    history: list[tuple[str, str]], actor: str
) -> None:
    done_by = dict(history)
    for action in ("programme", "sign", "approve", "pay"):
        excluded = {earlier for earlier, later in NEVER_THE_SAME if later == action}
        refused = any(done_by.get(earlier) == actor for earlier in excluded)
        if refused:
            with pytest.raises(SeparationOfDuties):
                domain.check_separation(action, actor, done_by)
        else:
            domain.check_separation(action, actor, done_by)
    if done_by.get("instruct") == actor:
        for action in ("approve", "pay", "sign"):
            with pytest.raises(SeparationOfDuties):
                domain.check_separation(action, actor, done_by)
    if done_by.get("approve") == actor:
        with pytest.raises(SeparationOfDuties):
            domain.check_separation("pay", actor, done_by)


@settings(max_examples=100)
@given(st.sampled_from(list(ACTION_ROLES)), st.sets(st.sampled_from(list(domain.Role))))
def test_each_action_needs_its_own_role(action: str, roles: set[str]) -> None:
    needed = ACTION_ROLES[action]
    if needed is None or needed in roles:
        domain.check_role(action, roles)
    else:
        with pytest.raises(WrongRole):
            domain.check_role(action, roles)


def test_neither_the_operator_nor_the_admin_takes_a_funding_decision() -> None:
    for action, role in ACTION_ROLES.items():
        if role is not None:
            with pytest.raises(WrongRole):
                domain.check_role(action, {"operator", "admin"})


def test_states_follow_their_tables() -> None:
    assert domain.convention_after("draft", "instruct") == "instructing"
    assert domain.convention_after("programmed", "sign") == "signed"
    with pytest.raises(NotAllowed):
        domain.convention_after("signed", "cancel")
    with pytest.raises(NotAllowed):
        domain.convention_after("nonsense", "sign")
    assert domain.tranche_after("instructed", "approve") == "approved"
    with pytest.raises(NotAllowed):
        domain.tranche_after("requested", "pay")
    with pytest.raises(NotAllowed):
        domain.tranche_after("paid", "reject")


def test_an_approver_linked_to_the_beneficiary_or_without_declaration_is_refused() -> None:
    assert domain.conflict_of_interest(True, "p1", ["p2"]) is None
    assert domain.conflict_of_interest(False, "p1", []) == "no_declaration"
    assert domain.conflict_of_interest(True, "p1", ["p1"]) == "declared_interest"


@settings(max_examples=200)
@given(st.integers(0, 10**8), st.integers(0, 10**8), st.integers(1, 10**8), st.integers(1, 10**8))
def test_what_is_due_back_is_never_negative_nor_more_than_paid(
    paid: int, spent: int, share: int, budget: int
) -> None:
    due = domain.unspent_due_back(paid, spent, share, budget)
    assert 0 <= due <= paid


def test_an_unspent_advance_is_due_back() -> None:
    # 10,000 EUR paid; 12,000 EUR spent on a 40,000 EUR budget the State funds half of: the State's
    # part of the spending is 6,000 EUR, so 4,000 EUR come back.
    assert domain.unspent_due_back(1_000_000, 1_200_000, 2_000_000, 4_000_000) == 400_000
