"""The console's pure rules: amounts in French and back, the waterfall's geometry, who sees
which page and which action (property tests, bounded)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from maillage.console import domain
from maillage.console.domain import ACTIONS, CONSOLE_ROLES, PAGES, Page


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**15 - 1))  # cents_of reads 13 digits of euros
def test_an_amount_printed_in_french_reads_back_as_the_same_cents(cents: int) -> None:
    printed = domain.euros(cents)
    assert printed.endswith("\u00a0€")
    assert domain.cents_of(printed) == cents


def test_amounts_typed_by_people() -> None:
    assert domain.cents_of("1 234,5") == 123_450
    assert domain.cents_of("9000") == 900_000
    assert domain.cents_of("12.34 €") == 1_234
    for bad in ("", "douze", "-5", "1,234", "1e3", "1" * 14, "１２０００", "١٢", "12,５"):
        assert domain.cents_of(bad) is None, bad
    assert domain.euros(-150) == "-1,50\u00a0€"


def _trace(draw: st.DrawFn) -> list[dict[str, object]]:
    """A random tree of spans (some parents missing), with random times."""
    count = draw(st.integers(min_value=1, max_value=30))
    spans: list[dict[str, object]] = []
    for index in range(count):
        start = draw(st.integers(min_value=0, max_value=10**9))
        parent = (
            spans[draw(st.integers(min_value=0, max_value=index - 1))]["spanId"]
            if index and draw(st.booleans())
            else draw(st.sampled_from(["", "ffffffffffffffff"]))
        )
        spans.append(
            {
                "spanId": f"{index:016x}",
                "parentSpanId": parent,
                "name": f"span {index}",
                "service": "registry",
                "startTimeUnixNano": str(start),
                "endTimeUnixNano": str(start + draw(st.integers(min_value=0, max_value=10**8))),
            }
        )
    return spans


@settings(max_examples=100, deadline=None)
@given(st.composite(_trace)())
def test_every_span_is_drawn_once_under_its_parent_and_inside_the_trace(
    spans: list[dict[str, object]],
) -> None:
    shuffled = list(spans)
    random.Random(0).shuffle(shuffled)
    rows = domain.waterfall(shuffled)
    assert sorted(r.span_id for r in rows) == sorted(str(s["spanId"]) for s in spans)
    position = {r.span_id: i for i, r in enumerate(rows)}
    depth = {r.span_id: r.depth for r in rows}
    for span in spans:
        parent = str(span["parentSpanId"])
        if parent in position:  # a child comes after its parent, one level deeper
            assert position[str(span["spanId"])] > position[parent]
            assert depth[str(span["spanId"])] == depth[parent] + 1
        else:
            assert depth[str(span["spanId"])] == 0
    for row in rows:
        assert 0 <= row.offset_percent <= 100
        assert row.width_percent >= 0.5
        assert row.offset_percent + row.width_percent <= 100.5 + 0.01


def test_pages_and_actions_are_for_console_roles_only() -> None:
    assert set(PAGES) == set(Page)
    for roles in PAGES.values():
        assert roles <= CONSOLE_ROLES
    assert not domain.console_roles(frozenset({"partner", "school"}))
    assert domain.pages_of(frozenset({"officer"}))[0] is Page.HOME
    assert Page.PARTNERS not in domain.pages_of(frozenset({"comptable"}))
    # The separated duties: nobody is offered two of them on one tranche.
    approve = {role for (role, kind, _), acts in ACTIONS.items() if "approve" in acts}
    pay = {role for (role, kind, _), acts in ACTIONS.items() if "pay" in acts}
    instruct = {
        r for (r, kind, _), acts in ACTIONS.items() if kind == "tranche" and "instruct" in acts
    }
    assert approve == {"ordonnateur"}
    assert pay == {"comptable"}
    assert instruct == {"officer"}
    assert domain.actions_for(frozenset({"officer"}), "tranche", "instructed") == []
