from maillage.stages3e.domain import STAGE_LENGTH_DAYS, OfferStatus


def test_a_stage_de_3e_lasts_one_school_week() -> None:
    assert STAGE_LENGTH_DAYS == 5
    assert [status.value for status in OfferStatus] == ["draft", "published", "closed"]
