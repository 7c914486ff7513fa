"""Identifiers of the French administration: valid ones normalised, invalid ones explained."""

from __future__ import annotations

from typing import Any

import pytest

from maillage.registry import identifiers
from maillage.registry.domain import PartnerKind
from maillage.registry.identifiers import InvalidIdentifier


def rejection(function, value: str) -> InvalidIdentifier:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidIdentifier) as caught:
        function(value)
    return caught.value


def test_invalid_identifier_is_a_value_error_naming_its_field() -> None:
    error = rejection(identifiers.siret, "73282932000075")
    assert isinstance(error, ValueError)
    assert error.field == "siret"
    assert (
        str(error)
        == error.message
        == "Le SIRET 73282932000075 a une clé de contrôle fausse (Luhn)."
    )
    assert rejection(lambda v: identifiers.siret(v, field="company.siret"), "1").field == (
        "company.siret"
    )


# --- SIREN / SIRET ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("732829320", "732829320"),
        ("732 829 320", "732829320"),
        (" 732.829.320 ", "732829320"),
        ("356000000", "356000000"),  # La Poste's SIREN passes Luhn
    ],
)
def test_valid_sirens_are_normalised_to_nine_digits(given: str, normalised: str) -> None:
    assert identifiers.siren(given) == normalised


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("732829321", "Le SIREN 732829321 a une clé de contrôle fausse (Luhn)."),
        ("73282932", "Le SIREN 73282932 a 8 chiffres ; un SIREN en a 9."),
        (
            "73282932A",
            "Le SIREN 73282932A ne contient que des chiffres (espaces et points acceptés).",
        ),
        ("  ", "Le SIREN est vide."),
    ],
)
def test_invalid_sirens_are_explained(given: str, message: str) -> None:
    assert str(rejection(identifiers.siren, given)) == message


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("73282932000074", "73282932000074"),
        ("732 829 320 00074", "73282932000074"),
        ("732.829.320.00074", "73282932000074"),
    ],
)
def test_valid_sirets_are_normalised_to_fourteen_digits(given: str, normalised: str) -> None:
    assert identifiers.siret(given) == normalised


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("73282932000075", "Le SIRET 73282932000075 a une clé de contrôle fausse (Luhn)."),
        (
            "7328293200007",
            "Le SIRET 7328293200007 a 13 chiffres ; "
            "un SIRET en a 14 (le SIREN de 9 chiffres et un NIC de 5).",
        ),
        (
            "7328293200007A",
            "Le SIRET 7328293200007A ne contient que des chiffres (espaces et points acceptés).",
        ),
        # Luhn-valid over 14 digits, but its first nine are not a valid SIREN.
        (
            "73282932100007",
            "Le SIRET 73282932100007 commence par un SIREN (732829321) dont la clé de contrôle "
            "est fausse (Luhn).",
        ),
    ],
)
def test_invalid_sirets_are_explained(given: str, message: str) -> None:
    assert str(rejection(identifiers.siret, given)) == message


def test_la_poste_sirets_follow_the_digit_sum_rule() -> None:
    # The head office passes Luhn (its digit sum, 26, is no multiple of 5).
    assert identifiers.siret("35600000000048") == "35600000000048"
    # A post office: fails Luhn, but its digit sum (45) is a multiple of 5.
    assert identifiers.siret("356 000 000 49837") == "35600000049837"
    error = rejection(identifiers.siret, "35600000049838")
    assert str(error) == (
        "Le SIRET 35600000049838 est un établissement de La Poste (SIREN 356000000) : la somme de "
        "ses chiffres est un multiple de 5, or elle vaut 46."
    )


# --- UAI -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("0940123Y", "0940123Y"),
        ("0940123y", "0940123Y"),
        (" 0750654D ", "0750654D"),  # lycée Henri-IV
        ("6200001G", "6200001G"),  # Corse-du-Sud
    ],
)
def test_valid_uais_are_upper_cased(given: str, normalised: str) -> None:
    assert identifiers.uai(given) == normalised


def test_a_wrong_uai_letter_names_the_expected_one() -> None:
    error = rejection(identifiers.uai, "0940123A")
    assert error.field == "uai"
    assert str(error) == (
        "L'UAI 0940123A a la lettre clé A ; 0940123 appelle la lettre Y (0940123 modulo 23 = 21)."
    )


@pytest.mark.parametrize("given", ["094012Y", "09401234Y", "0940123", "A940123Y", "0940123-Y"])
def test_malformed_uais_are_explained(given: str) -> None:
    assert "s'écrit 7 chiffres suivis d'une lettre clé" in str(rejection(identifiers.uai, given))


def test_the_check_letter_skips_i_o_and_q() -> None:
    assert len(identifiers.UAI_LETTERS) == 23
    assert not set("IOQ") & set(identifiers.UAI_LETTERS)
    assert identifiers.uai_check_letter("0940123") == "Y"
    assert identifiers.uai_check_letter("0750654") == "D"


@pytest.mark.parametrize(
    ("uai", "departement"),
    [
        ("0940123Y", "94"),
        ("0750654D", "75"),
        ("6200001G", "2A"),
        ("7200001" + identifiers.uai_check_letter("7200001"), "2B"),
        ("9740001" + identifiers.uai_check_letter("9740001"), "974"),
        ("0010001" + identifiers.uai_check_letter("0010001"), "01"),
    ],
)
def test_a_uai_tells_its_departement(uai: str, departement: str) -> None:
    assert identifiers.uai_departement(uai) == departement


def test_a_uai_prefix_that_numbers_no_departement_is_refused() -> None:
    code = "5000001" + identifiers.uai_check_letter("5000001")
    assert "commence par 500, qui ne numérote aucun département" in str(
        rejection(identifiers.uai_departement, code)
    )


@pytest.mark.parametrize(
    ("given", "normalised"),
    [("094", "94"), ("94", "94"), ("02A", "2A"), ("2b", "2B"), ("971", "971"), ("001", "01")],
)
def test_departement_codes_take_the_insee_form(given: str, normalised: str) -> None:
    assert identifiers.departement(given) == normalised


@pytest.mark.parametrize("given", ["20", "00", "96", "9", "2C", "1234"])
def test_invalid_departement_codes(given: str) -> None:
    assert "n'est pas un code de département" in str(rejection(identifiers.departement, given))


# --- RNA, INSEE commune, QPV -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "normalised"), [("W941234567", "W941234567"), ("w751234567", "W751234567")]
)
def test_valid_rna_numbers(given: str, normalised: str) -> None:
    assert identifiers.rna(given) == normalised


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("941234567", "Le numéro RNA 941234567 commence par W (par exemple W941234567)."),
        (
            "W94123456",
            "Le numéro RNA W94123456 s'écrit W suivi de 9 chiffres ; il a 8 caractères après le W.",
        ),
        (
            "W9412345678",
            "Le numéro RNA W9412345678 s'écrit W suivi de 9 chiffres ; "
            "il a 10 caractères après le W.",
        ),
        (
            "W94123456A",
            "Le numéro RNA W94123456A s'écrit W suivi de 9 chiffres ; "
            "il a 9 caractères après le W.",
        ),
    ],
)
def test_invalid_rna_numbers_are_explained(given: str, message: str) -> None:
    assert str(rejection(identifiers.rna, given)) == message


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("94054", "94054"),
        ("2A004", "2A004"),
        ("2b033", "2B033"),
        ("97411", "97411"),
        ("01053", "01053"),
    ],
)
def test_valid_insee_commune_codes(given: str, normalised: str) -> None:
    assert identifiers.insee_commune(given) == normalised


@pytest.mark.parametrize(
    ("given", "fragment"),
    [
        ("9405", "a 5 caractères"),
        ("940544", "a 5 caractères"),
        ("2C004", "a 5 caractères"),
        ("20004", "les communes corses sont numérotées 2A### ou 2B###"),
        ("00123", "aucun département n'est numéroté 00"),
    ],
)
def test_invalid_insee_commune_codes_are_explained(given: str, fragment: str) -> None:
    error = rejection(identifiers.insee_commune, given)
    assert error.field == "commune_code"
    assert fragment in str(error)


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("QP093028", "QP093028"),  # 2015
        ("qp094011", "QP094011"),
        ("QP02A001", "QP02A001"),
        ("QN09401M", "QN09401M"),  # 2024
        ("QN9401M", "QN9401M"),  # 2024, 2-character département
        ("QN97101A", "QN97101A"),
        ("QN2A01B", "QN2A01B"),
    ],
)
def test_valid_qpv_codes_of_both_generations(given: str, normalised: str) -> None:
    assert identifiers.qpv(given) == normalised


@pytest.mark.parametrize(
    ("given", "fragment"),
    [
        ("QP09302", "n'est pas un code de 2015"),
        ("QP09302A", "n'est pas un code de 2015"),
        ("QN094011", "n'est pas un code de 2024"),  # no final letter
        ("QN094M", "n'est pas un code de 2024"),
        ("QX093028", "commence par QP (codes de 2015) ou QN (codes de 2024)"),
    ],
)
def test_invalid_qpv_codes_are_explained(given: str, fragment: str) -> None:
    assert fragment in str(rejection(identifiers.qpv, given))


# --- Required identifiers by kind ------------------------------------------------------------


def test_every_partner_kind_has_its_requirements() -> None:
    assert set(identifiers.REQUIRED_IDENTIFIERS) == {kind.value for kind in PartnerKind}


@pytest.mark.parametrize(
    ("kind", "requirements"),
    [
        ("entreprise", {frozenset({"siret"})}),
        ("collectivite", {frozenset({"siret"})}),
        ("service_etat", {frozenset({"siret"})}),
        ("etablissement_superieur", {frozenset({"siret"})}),
        ("association", {frozenset({"rna", "siret"})}),
        ("college", {frozenset({"uai"})}),
        ("lycee", {frozenset({"uai"})}),
        ("caf", set()),
        ("autre", set()),
    ],
)
def test_required_identifiers_by_kind(kind: str, requirements: set[frozenset[str]]) -> None:
    assert identifiers.required_identifiers(kind) == requirements


def test_an_association_needs_an_rna_number_or_a_siret_or_both() -> None:
    for given in (["rna"], ["siret"], ["rna", "siret"]):
        identifiers.check_required_identifiers("association", given)
    error = rejection(
        lambda kind: identifiers.check_required_identifiers(kind, ["uai"]), "association"
    )
    assert str(error) == "Une association donne son numéro RNA ou son SIRET (ou les deux)."


def test_schools_need_a_uai_and_companies_a_siret() -> None:
    error = rejection(
        lambda kind: identifiers.check_required_identifiers(kind, ["siret"]), "college"
    )
    assert (error.field, str(error)) == ("uai", "Un collège donne son UAI.")
    error = rejection(
        lambda kind: identifiers.check_required_identifiers(kind, ["rna"]), "entreprise"
    )
    assert (error.field, str(error)) == ("siret", "Une entreprise donne son SIRET.")
    identifiers.check_required_identifiers("caf", [])
    identifiers.check_required_identifiers("autre", [])


def test_an_unknown_kind_is_refused() -> None:
    assert "Type de partenaire inconnu 'ecole'" in str(
        rejection(identifiers.required_identifiers, "ecole")
    )


# --- Numbers that pass their check but are never assigned ----------------------------------------


def _with_letter(digits: str) -> str:
    return digits + identifiers.uai_check_letter(digits)


@pytest.mark.parametrize(
    ("check", "given", "field", "fragment"),
    [
        (
            identifiers.siren,
            "000000000",
            "siren",
            "Le SIREN 000000000 passe sa clé de contrôle mais",
        ),
        (identifiers.siren, "000 000 000", "siren", "jamais attribué (que des zéros)"),
        (identifiers.siret, "00000000000000", "siret", "son SIREN 000000000 n'est jamais attribué"),
        (
            identifiers.siret,
            "000000000 00000",
            "siret",
            "son SIREN 000000000 n'est jamais attribué",
        ),
        (
            identifiers.siret,
            "73282935300000",
            "siret",
            "son NIC (les cinq derniers chiffres) 00000",
        ),
        (identifiers.uai, "0000000A", "uai", "commence par 000, qui ne numérote aucun département"),
        (identifiers.uai, _with_letter("0200001"), "uai", "commence par 020"),  # Corsica: 620/720
        (identifiers.uai, _with_letter("0960001"), "uai", "commence par 096"),
        (identifiers.uai, _with_letter("9990001"), "uai", "commence par 999"),
        (identifiers.uai, _with_letter("9850001"), "uai", "commence par 985"),
        (identifiers.rna, "W000000000", "rna", "Le numéro RNA W000000000 n'est jamais attribué"),
        (identifiers.rna, "W000123456", "rna", "000 n'en nomme aucun"),
        (identifiers.insee_commune, "94000", "commune_code", "94000 n'est jamais attribué"),
        (identifiers.insee_commune, "2A000", "commune_code", "2A000 n'est jamais attribué"),
        (identifiers.insee_commune, "97100", "commune_code", "97100 n'est jamais attribué"),
        (identifiers.insee_commune, "99134", "commune_code", "les codes 99### désignent des pays"),
        (identifiers.insee_commune, "97912", "commune_code", "aucun département ni collectivité"),
        (
            identifiers.qpv,
            "QP000000",
            "qpv",
            "QP000000 n'est jamais attribué : 000 ne numérote aucun",
        ),
        (identifiers.qpv, "QN00001A", "qpv", "QN00001A n'est jamais attribué"),
        (identifiers.qpv, "QN9601A", "qpv", "96 ne numérote aucun département"),
        (identifiers.departement, "970", "departement", "n'est pas un code de département"),
        (identifiers.departement, "985", "departement", "n'est pas un code de département"),
    ],
)
def test_numbers_that_pass_their_check_but_are_never_assigned_are_refused(
    check: Any, given: str, field: str, fragment: str
) -> None:
    error = rejection(check, given)
    assert error.field == field
    assert fragment in str(error)


@pytest.mark.parametrize(
    ("check", "given"),
    [
        (identifiers.siret, "73282932000074"),
        (identifiers.siret, "35600000000048"),  # La Poste's head office
        (identifiers.uai, _with_letter("9760001")),  # Mayotte
        (identifiers.uai, _with_letter("9880001")),  # Nouvelle-Calédonie
        (identifiers.insee_commune, "97801"),  # Saint-Martin
        (identifiers.insee_commune, "98818"),  # Nouméa
        (identifiers.insee_commune, "75101"),  # Paris 1er arrondissement
        (identifiers.departement, "975"),
        (identifiers.departement, "989"),
        (identifiers.qpv, "QP971001"),
    ],
)
def test_their_neighbours_that_are_assigned_still_pass(check: Any, given: str) -> None:
    assert check(given)
