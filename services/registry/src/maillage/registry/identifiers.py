"""Identifiers of the French administration: check them, normalise them, explain a bad one.

Pure functions, no I/O and no framework. Each takes what a person or a file gave and returns the
normalised identifier, or raises :class:`InvalidIdentifier` naming the field and saying precisely
what is wrong (in English, with the French administration's own terms).

- SIREN / SIRET (INSEE's company and establishment numbers): 9 / 14 digits, Luhn check digit;
  La Poste's establishments (SIREN 356000000) use "digit sum is a multiple of 5" instead.
- UAI (Éducation nationale's school number): 7 digits and a check letter.
- RNA (répertoire national des associations): ``W`` and 9 digits.
- Code commune INSEE: 5 characters, ``2A``/``2B`` in Corsica.
- QPV (quartier prioritaire de la politique de la ville): 2015 and 2024 codes.

A check digit or letter catches typing errors, not numbers that were never given out: SIREN
000000000 passes Luhn, UAI 0000000A its letter. Each function also refuses what its issuer can
never have assigned, saying so: a SIREN or a SIRET's NIC of zeros (INSEE numbers from 1), a UAI
or QPV code whose département part numbers no département, an RNA number whose greffe is 000, a
commune numbered 000 in its département or a 99### code (a country, in INSEE's geography).
"""

from __future__ import annotations

import re
from collections.abc import Collection

from stdnum import luhn
from stdnum.exceptions import InvalidChecksum, InvalidFormat, InvalidLength, ValidationError
from stdnum.fr import siren as stdnum_siren
from stdnum.fr import siret as stdnum_siret


class InvalidIdentifier(ValueError):
    """``field`` holds a value that is not a valid identifier; ``message`` says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return self.message


def _clean(value: object, field: str, label: str) -> str:
    if not isinstance(value, str):
        raise InvalidIdentifier(field, f"{label} must be a string, not {type(value).__name__}")
    cleaned = value.strip()
    if not cleaned:
        raise InvalidIdentifier(field, f"{label} is empty")
    return cleaned


def _digit_sum(number: str) -> int:
    return sum(int(digit) for digit in number)


# --- SIREN / SIRET -------------------------------------------------------------------------------

LA_POSTE_SIREN = "356000000"


def siren(value: str, *, field: str = "siren") -> str:
    """A SIREN (9 digits, Luhn); spaces and dots are allowed on input (``732 829 320``)."""
    # InvalidLength is a subclass of InvalidFormat: catch it first.
    number = stdnum_siren.compact(_clean(value, field, "SIREN"))
    try:
        number = str(stdnum_siren.validate(number))
    except InvalidLength:
        raise InvalidIdentifier(
            field, f"SIREN {number} has {len(number)} digits; a SIREN has 9"
        ) from None
    except InvalidFormat:
        raise InvalidIdentifier(
            field, f"SIREN {number} must contain only digits (spaces and dots are allowed)"
        ) from None
    except InvalidChecksum:
        raise InvalidIdentifier(field, f"SIREN {number} fails its check digit (Luhn)") from None
    if number == "0" * 9:
        raise InvalidIdentifier(
            field, f"SIREN {number} passes its check digit but is never assigned (all zeros)"
        )
    return number


def siret(value: str, *, field: str = "siret") -> str:
    """A SIRET (14 digits: the SIREN and a 5-digit NIC), Luhn over the 14 digits.

    La Poste's establishments share SIREN 356000000 and are numbered past what Luhn allows: their
    SIRET is valid when its digit sum is a multiple of 5 (the head office, 35600000000048, passes
    Luhn). ``stdnum.fr.siret`` implements both rules; this function only explains failures.
    """
    number = stdnum_siret.compact(_clean(value, field, "SIRET"))
    try:
        number = str(stdnum_siret.validate(number))
    except InvalidLength:
        raise InvalidIdentifier(
            field,
            f"SIRET {number} has {len(number)} digits; a SIRET has 14 "
            "(the 9-digit SIREN and a 5-digit NIC)",
        ) from None
    except InvalidFormat:
        raise InvalidIdentifier(
            field, f"SIRET {number} must contain only digits (spaces and dots are allowed)"
        ) from None
    except InvalidChecksum:
        if number.startswith(LA_POSTE_SIREN):
            total = _digit_sum(number)
            raise InvalidIdentifier(
                field,
                f"SIRET {number} is a La Poste establishment (SIREN {LA_POSTE_SIREN}) whose digit "
                f"sum must be a multiple of 5; it is {total}",
            ) from None
        if not luhn.is_valid(number):
            raise InvalidIdentifier(field, f"SIRET {number} fails its check digit (Luhn)") from None
        raise InvalidIdentifier(
            field, f"SIRET {number} has a SIREN ({number[:9]}) that fails its check digit (Luhn)"
        ) from None
    except ValidationError as error:  # pragma: no cover - stdnum raises only the three above
        raise InvalidIdentifier(field, f"SIRET {number} is invalid: {error}") from None
    if number[:9] == "0" * 9:
        raise InvalidIdentifier(
            field,
            f"SIRET {number} passes its check digit but its SIREN {number[:9]} is never "
            "assigned (all zeros)",
        )
    if number[9:] == "0" * 5:
        raise InvalidIdentifier(
            field,
            f"SIRET {number} passes its check digit but its NIC (the last five digits) 00000 is "
            "never assigned: INSEE numbers a unit's establishments from 0001",
        )
    return number


# --- UAI -----------------------------------------------------------------------------------------

UAI_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"  # 23 letters: no I, O or Q
_UAI = re.compile(r"^[0-9]{7}[A-Z]$")


def uai_check_letter(digits: str) -> str:
    """The check letter of a UAI's seven digits."""
    return UAI_LETTERS[int(digits) % 23]


def uai(value: str, *, field: str = "uai") -> str:
    """A UAI (unité administrative immatriculée): 7 digits and a check letter, upper-cased.

    The letter is ``"ABCDEFGHJKLMNPRSTUVWXYZ"[int(first 7 digits) % 23]``: ``0940123Y`` and
    ``0750654D`` (lycée Henri-IV) are valid, ``0940123A`` is not.
    """
    code = _clean(value, field, "UAI").upper().replace(" ", "")
    if not _UAI.match(code):
        raise InvalidIdentifier(
            field, f"UAI {code} must be 7 digits followed by a check letter (e.g. 0940123Y)"
        )
    expected = uai_check_letter(code[:7])
    if code[7] != expected:
        raise InvalidIdentifier(
            field,
            f"UAI {code} has check letter {code[7]}; {code[:7]} requires {expected} "
            f"({code[:7]} mod 23 = {int(code[:7]) % 23})",
        )
    if _uai_prefix_departement(code[:3]) is None:
        raise InvalidIdentifier(
            field,
            f"UAI {code} passes its check letter but starts with {code[:3]}, which numbers no "
            "département (001-095, 620/720 for Corsica, 971-978 and 984-989 overseas): it is "
            "never assigned",
        )
    return code


OVERSEAS = frozenset(
    {"971", "972", "973", "974", "975", "976", "977", "978", "984", "986", "987", "988", "989"}
)
"""INSEE's codes of the overseas départements and collectivités (984 TAAF, 989 Clipperton)."""


def departement(value: str, *, field: str = "departement") -> str:
    """A département code in INSEE form: ``94``, ``2A``, ``971``.

    Accepts the Éducation nationale's 3-character form as well (``094``, ``02A``, ``971``), which is
    what the Annuaire de l'éducation's ``code_departement`` column holds.
    """
    code = _clean(value, field, "Département code").upper()
    if len(code) == 3 and code[0] == "0":
        code = code[1:]
    if re.fullmatch(r"2[AB]", code) or code in OVERSEAS:
        return code
    if re.fullmatch(r"[0-9]{2}", code) and code not in {"00", "20", "96", "97", "98", "99"}:
        return code
    raise InvalidIdentifier(
        field,
        f"département code {value.strip()!r} is not one: expected 01-95, 2A or 2B (Corsica), "
        "or 971-978, 984, 986-989 overseas",
    )


def _uai_prefix_departement(prefix: str) -> str | None:
    """The département a UAI's first three digits number, or None."""
    if prefix == "620":
        return "2A"
    if prefix == "720":
        return "2B"
    if prefix[0] == "0" and 1 <= int(prefix) <= 95 and prefix != "020":
        return prefix[1:]
    return prefix if prefix in OVERSEAS else None


def uai_departement(value: str, *, field: str = "uai") -> str:
    """The département of a school from its UAI, in INSEE form.

    A UAI's first three digits number the département: ``094`` → ``94`` (Val-de-Marne),
    ``075`` → ``75``, ``620`` → ``2A`` (Corse-du-Sud), ``720`` → ``2B`` (Haute-Corse); overseas
    keep three digits (``971`` Guadeloupe, ``974`` La Réunion, ``976`` Mayotte). A UAI whose
    prefix numbers no département is refused by :func:`uai` already.
    """
    code = uai(value, field=field)
    departement = _uai_prefix_departement(code[:3])
    assert departement is not None
    return departement


# --- RNA, INSEE commune, QPV ---------------------------------------------------------------------

_RNA = re.compile(r"^W[0-9]{9}$")


def rna(value: str, *, field: str = "rna") -> str:
    """An RNA number (répertoire national des associations): ``W`` and 9 digits, upper-cased."""
    code = _clean(value, field, "RNA number").upper().replace(" ", "")
    if not _RNA.match(code):
        if not code.startswith("W"):
            raise InvalidIdentifier(field, f"RNA number {code} must start with W (e.g. W941234567)")
        raise InvalidIdentifier(
            field,
            f"RNA number {code} must be W followed by 9 digits; it has {len(code) - 1} "
            "characters after the W",
        )
    if code[1:4] == "000":
        raise InvalidIdentifier(
            field,
            f"RNA number {code} is never assigned: its first three digits name the greffe "
            "(a préfecture's) that registered it, and 000 names none",
        )
    return code


_INSEE_COMMUNE = re.compile(r"^([0-9]{5}|2[AB][0-9]{3})$")


def insee_commune(value: str, *, field: str = "commune_code") -> str:
    """A code commune INSEE (code officiel géographique): ``94054`` (Orly), ``2A004`` (Ajaccio).

    Not the postal code: Orly is 94054 for INSEE and 94310 for La Poste.
    """
    code = _clean(value, field, "Code commune INSEE").upper()
    if not _INSEE_COMMUNE.match(code):
        raise InvalidIdentifier(
            field,
            f"code commune INSEE {code} must be 5 characters: 5 digits, or 2A/2B and 3 digits in "
            "Corsica (e.g. 94054 for Orly)",
        )
    if code.startswith("20"):
        raise InvalidIdentifier(
            field,
            f"code commune INSEE {code}: Corsican communes are numbered 2A### or 2B### since 1976",
        )
    if code.startswith(("00", "96")):
        raise InvalidIdentifier(
            field, f"code commune INSEE {code}: no département is numbered {code[:2]}"
        )
    if code.startswith("99"):
        raise InvalidIdentifier(
            field,
            f"code commune INSEE {code}: 99### codes name countries abroad in INSEE's "
            "geography, not communes",
        )
    overseas = code.startswith(("97", "98"))
    if overseas and code[:3] not in OVERSEAS:
        raise InvalidIdentifier(
            field, f"code commune INSEE {code}: no département or collectivité is {code[:3]}"
        )
    if code[3:] == "00" if overseas else code[2:] == "000":
        raise InvalidIdentifier(
            field,
            f"code commune INSEE {code} is never assigned: communes are numbered from 1 in "
            "their département",
        )
    return code


_QPV_2015 = re.compile(r"^QP(?:[0-9]{3}|02[AB])[0-9]{3}$")
_QPV_2024 = re.compile(r"^QN(?:[0-9]{2,3}|0?2[AB])[0-9]{2}[A-Z]$")


def qpv(value: str, *, field: str = "qpv") -> str:
    """A quartier prioritaire code, upper-cased.

    2015 codes: ``QP`` + 3-digit département + 3 digits (``QP094011``, ``QP093028``).
    2024 codes: ``QN`` + département (2 or 3 characters) + 2 digits + a letter (``QN09401M``).
    """
    code = _clean(value, field, "QPV code").upper().replace(" ", "")
    if code.startswith("QP"):
        if _QPV_2015.match(code):
            return _qpv_departement_checked(code, code[2:5], field)
        raise InvalidIdentifier(
            field,
            f"QPV code {code} is not a 2015 code: QP, a 3-digit département and 3 digits "
            "(e.g. QP094011)",
        )
    if code.startswith("QN"):
        if _QPV_2024.match(code):
            return _qpv_departement_checked(code, code[2:-3], field)
        raise InvalidIdentifier(
            field,
            f"QPV code {code} is not a 2024 code: QN, the département, 2 digits and a letter "
            "(e.g. QN09401M)",
        )
    raise InvalidIdentifier(
        field, f"QPV code {code} must start with QP (2015 codes) or QN (2024 codes)"
    )


def _qpv_departement_checked(code: str, departement_part: str, field: str) -> str:
    try:
        departement(departement_part)
    except InvalidIdentifier:
        raise InvalidIdentifier(
            field,
            f"QPV code {code} is never assigned: {departement_part} numbers no département",
        ) from None
    return code


# --- Which identifiers each kind of partner needs ------------------------------------------------

# Kind of partner → its requirements. Each requirement is a set of alternatives: any one of them
# present satisfies it (both is fine too); every requirement must be satisfied; no requirement
# means no identifier is required. Kinds are PartnerKind values, kept as strings so this module
# depends on nothing else.
SIRET = frozenset({"siret"})
RNA_OR_SIRET = frozenset({"rna", "siret"})
UAI = frozenset({"uai"})

REQUIRED_IDENTIFIERS: dict[str, frozenset[frozenset[str]]] = {
    "entreprise": frozenset({SIRET}),
    "collectivite": frozenset({SIRET}),
    "service_etat": frozenset({SIRET}),
    "etablissement_superieur": frozenset({SIRET}),
    "association": frozenset({RNA_OR_SIRET}),  # RNA and/or SIRET
    "college": frozenset({UAI}),
    "lycee": frozenset({UAI}),
    "caf": frozenset(),  # SIRET optional, checked when given
    "autre": frozenset(),  # SIRET optional, checked when given
}
REQUIRED = REQUIRED_IDENTIFIERS


def required_identifiers(kind: str) -> frozenset[frozenset[str]]:
    """The identifiers a partner of ``kind`` must give: a set of requirements, each a set of
    alternatives of which at least one must be present.

    - ``entreprise``, ``collectivite``, ``service_etat``, ``etablissement_superieur``: a SIRET.
    - ``association``: an RNA number, a SIRET, or both (associations asking for State grants
      have a SIRET; many small ones only have their RNA number).
    - ``college``, ``lycee``: a UAI (their REP status and pupil count then come from the
      Annuaire de l'éducation, and a UAI it lists verifies them automatically).
    - ``caf`` and ``autre``: nothing is required. A caisse d'allocations familiales has a SIRET,
      but it is a well-known local body that operators verify by name and territory; ``autre``
      covers partners (collectifs, foreign or informal bodies) that may have no French
      identifier at all. A SIRET they give is checked like any other.

    Every identifier given is validated whatever the kind; this table only says which must be
    there.
    """
    try:
        return REQUIRED_IDENTIFIERS[kind]
    except KeyError:
        raise InvalidIdentifier(
            "kind", f"unknown kind of partner {kind!r}; one of {', '.join(REQUIRED_IDENTIFIERS)}"
        ) from None


_ARTICLES = {"siret": "a SIRET", "rna": "an RNA number", "uai": "a UAI"}
_KIND_LABELS = {
    "entreprise": "an entreprise",
    "collectivite": "a collectivité",
    "service_etat": "a service de l'État",
    "etablissement_superieur": "an établissement supérieur",
    "association": "an association",
    "college": "a collège",
    "lycee": "a lycée",
}


def check_required_identifiers(kind: str, given: Collection[str]) -> None:
    """Raise :class:`InvalidIdentifier` unless ``given`` (names of the identifiers present)
    satisfies every requirement of ``kind``; the error names the first one missing."""
    present = set(given)
    for requirement in sorted(required_identifiers(kind), key=sorted):
        if present.isdisjoint(requirement):
            names = sorted(requirement, key=lambda name: (name != "rna", name))
            options = " or ".join(_ARTICLES.get(name, name) for name in names)
            both = " (or both)" if len(requirement) == 2 else ""
            raise InvalidIdentifier(
                names[0] if len(names) == 1 else "identifiers",
                f"{_KIND_LABELS.get(kind, kind)} must give {options}{both}",
            )
