from maillage.cordees.domain import PriorityClass


def test_rep_plus_is_served_before_rep_then_qpv_then_others() -> None:
    assert sorted(PriorityClass, key=int) == [
        PriorityClass.REP_PLUS,
        PriorityClass.REP,
        PriorityClass.QPV_OR_RURAL,
        PriorityClass.OTHER,
    ]
