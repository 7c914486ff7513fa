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
        raise InvalidIdentifier(field, f"{label} : une chaîne de caractères est attendue.")
    cleaned = value.strip()
    if not cleaned:
        raise InvalidIdentifier(field, f"{label} est vide.")
    return cleaned


def _digit_sum(number: str) -> int:
    return sum(int(digit) for digit in number)


# --- SIREN / SIRET -------------------------------------------------------------------------------

LA_POSTE_SIREN = "356000000"


def siren(value: str, *, field: str = "siren") -> str:
    """A SIREN (9 digits, Luhn); spaces and dots are allowed on input (``732 829 320``)."""
    # InvalidLength is a subclass of InvalidFormat: catch it first.
    number = stdnum_siren.compact(_clean(value, field, "Le SIREN"))
    try:
        number = str(stdnum_siren.validate(number))
    except InvalidLength:
        raise InvalidIdentifier(
            field, f"Le SIREN {number} a {len(number)} chiffres ; un SIREN en a 9."
        ) from None
    except InvalidFormat:
        raise InvalidIdentifier(
            field,
            f"Le SIREN {number} ne contient que des chiffres (espaces et points acceptés).",
        ) from None
    except InvalidChecksum:
        raise InvalidIdentifier(
            field, f"Le SIREN {number} a une clé de contrôle fausse (Luhn)."
        ) from None
    if number == "0" * 9:
        raise InvalidIdentifier(
            field,
            f"Le SIREN {number} passe sa clé de contrôle mais n'est jamais attribué "
            "(que des zéros).",
        )
    return number


def siret(value: str, *, field: str = "siret") -> str:
    """A SIRET (14 digits: the SIREN and a 5-digit NIC), Luhn over the 14 digits.

    La Poste's establishments share SIREN 356000000 and are numbered past what Luhn allows: their
    SIRET is valid when its digit sum is a multiple of 5 (the head office, 35600000000048, passes
    Luhn). ``stdnum.fr.siret`` implements both rules; this function only explains failures.
    """
    number = stdnum_siret.compact(_clean(value, field, "Le SIRET"))
    try:
        number = str(stdnum_siret.validate(number))
    except InvalidLength:
        raise InvalidIdentifier(
            field,
            f"Le SIRET {number} a {len(number)} chiffres ; un SIRET en a 14 "
            "(le SIREN de 9 chiffres et un NIC de 5).",
        ) from None
    except InvalidFormat:
        raise InvalidIdentifier(
            field,
            f"Le SIRET {number} ne contient que des chiffres (espaces et points acceptés).",
        ) from None
    except InvalidChecksum:
        if number.startswith(LA_POSTE_SIREN):
            total = _digit_sum(number)
            raise InvalidIdentifier(
                field,
                f"Le SIRET {number} est un établissement de La Poste (SIREN {LA_POSTE_SIREN}) : "
                f"la somme de ses chiffres est un multiple de 5, or elle vaut {total}.",
            ) from None
        if not luhn.is_valid(number):
            raise InvalidIdentifier(
                field, f"Le SIRET {number} a une clé de contrôle fausse (Luhn)."
            ) from None
        raise InvalidIdentifier(
            field,
            f"Le SIRET {number} commence par un SIREN ({number[:9]}) dont la clé de contrôle "
            "est fausse (Luhn).",
        ) from None
    except ValidationError:  # pragma: no cover - stdnum raises only the three above
        raise InvalidIdentifier(field, f"Le SIRET {number} n'est pas valide.") from None
    if number[:9] == "0" * 9:
        raise InvalidIdentifier(
            field,
            f"Le SIRET {number} passe sa clé de contrôle mais son SIREN {number[:9]} n'est jamais "
            "attribué (que des zéros).",
        )
    if number[9:] == "0" * 5:
        raise InvalidIdentifier(
            field,
            f"Le SIRET {number} passe sa clé de contrôle mais son NIC (les cinq derniers chiffres) "
            "00000 n'est jamais attribué : l'INSEE numérote les établissements à partir de 0001.",
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
    code = _clean(value, field, "L'UAI").upper().replace(" ", "")
    if not _UAI.match(code):
        raise InvalidIdentifier(
            field,
            f"L'UAI {code} s'écrit 7 chiffres suivis d'une lettre clé (par exemple 0940123Y).",
        )
    expected = uai_check_letter(code[:7])
    if code[7] != expected:
        raise InvalidIdentifier(
            field,
            f"L'UAI {code} a la lettre clé {code[7]} ; {code[:7]} appelle la lettre {expected} "
            f"({code[:7]} modulo 23 = {int(code[:7]) % 23}).",
        )
    if _uai_prefix_departement(code[:3]) is None:
        raise InvalidIdentifier(
            field,
            f"L'UAI {code} passe sa lettre clé mais commence par {code[:3]}, qui ne numérote aucun "
            "département (001 à 095, 620 ou 720 pour la Corse, 971 à 978 et 984 à 989 outre-mer) : "
            "elle n'est jamais attribuée.",
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
    code = _clean(value, field, "Le code de département").upper()
    if len(code) == 3 and code[0] == "0":
        code = code[1:]
    if re.fullmatch(r"2[AB]", code) or code in OVERSEAS:
        return code
    if re.fullmatch(r"[0-9]{2}", code) and code not in {"00", "20", "96", "97", "98", "99"}:
        return code
    raise InvalidIdentifier(
        field,
        f"{value.strip()!r} n'est pas un code de département : 01 à 95, 2A ou 2B (Corse), "
        "ou 971 à 978, 984, 986 à 989 (outre-mer).",
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
    code = _clean(value, field, "Le numéro RNA").upper().replace(" ", "")
    if not _RNA.match(code):
        if not code.startswith("W"):
            raise InvalidIdentifier(
                field, f"Le numéro RNA {code} commence par W (par exemple W941234567)."
            )
        raise InvalidIdentifier(
            field,
            f"Le numéro RNA {code} s'écrit W suivi de 9 chiffres ; il a {len(code) - 1} "
            "caractères après le W.",
        )
    if code[1:4] == "000":
        raise InvalidIdentifier(
            field,
            f"Le numéro RNA {code} n'est jamais attribué : ses trois premiers chiffres nomment le "
            "greffe (d'une préfecture) qui l'a enregistré, et 000 n'en nomme aucun.",
        )
    return code


_INSEE_COMMUNE = re.compile(r"^([0-9]{5}|2[AB][0-9]{3})$")


def insee_commune(value: str, *, field: str = "commune_code") -> str:
    """A code commune INSEE (code officiel géographique): ``94054`` (Orly), ``2A004`` (Ajaccio).

    Not the postal code: Orly is 94054 for INSEE and 94310 for La Poste.
    """
    code = _clean(value, field, "Le code commune INSEE").upper()
    if not _INSEE_COMMUNE.match(code):
        raise InvalidIdentifier(
            field,
            f"Le code commune INSEE {code} a 5 caractères : 5 chiffres, ou 2A ou 2B et 3 chiffres "
            "en Corse (par exemple 94054 pour Orly).",
        )
    if code.startswith("20"):
        raise InvalidIdentifier(
            field,
            f"Code commune INSEE {code} : les communes corses sont numérotées 2A### ou 2B### "
            "depuis 1976.",
        )
    if code.startswith(("00", "96")):
        raise InvalidIdentifier(
            field, f"Code commune INSEE {code} : aucun département n'est numéroté {code[:2]}."
        )
    if code.startswith("99"):
        raise InvalidIdentifier(
            field,
            f"Code commune INSEE {code} : dans la géographie de l'INSEE, les codes 99### "
            "désignent des pays étrangers, pas des communes.",
        )
    overseas = code.startswith(("97", "98"))
    if overseas and code[:3] not in OVERSEAS:
        raise InvalidIdentifier(
            field,
            f"Code commune INSEE {code} : aucun département ni collectivité n'est {code[:3]}.",
        )
    if code[3:] == "00" if overseas else code[2:] == "000":
        raise InvalidIdentifier(
            field,
            f"Le code commune INSEE {code} n'est jamais attribué : les communes sont numérotées à "
            "partir de 1 dans leur département.",
        )
    return code


_QPV_2015 = re.compile(r"^QP(?:[0-9]{3}|02[AB])[0-9]{3}$")
_QPV_2024 = re.compile(r"^QN(?:[0-9]{2,3}|0?2[AB])[0-9]{2}[A-Z]$")


def qpv(value: str, *, field: str = "qpv") -> str:
    """A quartier prioritaire code, upper-cased.

    2015 codes: ``QP`` + 3-digit département + 3 digits (``QP094011``, ``QP093028``).
    2024 codes: ``QN`` + département (2 or 3 characters) + 2 digits + a letter (``QN09401M``).
    """
    code = _clean(value, field, "Le code QPV").upper().replace(" ", "")
    if code.startswith("QP"):
        if _QPV_2015.match(code):
            return _qpv_departement_checked(code, code[2:5], field)
        raise InvalidIdentifier(
            field,
            f"Le code QPV {code} n'est pas un code de 2015 : QP, le département sur 3 chiffres "
            "et 3 chiffres (par exemple QP094011).",
        )
    if code.startswith("QN"):
        if _QPV_2024.match(code):
            return _qpv_departement_checked(code, code[2:-3], field)
        raise InvalidIdentifier(
            field,
            f"Le code QPV {code} n'est pas un code de 2024 : QN, le département, 2 chiffres et "
            "une lettre (par exemple QN09401M).",
        )
    raise InvalidIdentifier(
        field, f"Le code QPV {code} commence par QP (codes de 2015) ou QN (codes de 2024)."
    )


def _qpv_departement_checked(code: str, departement_part: str, field: str) -> str:
    try:
        departement(departement_part)
    except InvalidIdentifier:
        raise InvalidIdentifier(
            field,
            f"Le code QPV {code} n'est jamais attribué : {departement_part} ne numérote aucun "
            "département.",
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
            "kind",
            f"Type de partenaire inconnu {kind!r} : {', '.join(REQUIRED_IDENTIFIERS)} attendu.",
        ) from None


_ARTICLES = {"siret": "son SIRET", "rna": "son numéro RNA", "uai": "son UAI"}
_KIND_LABELS = {
    "entreprise": "Une entreprise",
    "collectivite": "Une collectivité",
    "service_etat": "Un service de l'État",
    "etablissement_superieur": "Un établissement d'enseignement supérieur",
    "association": "Une association",
    "college": "Un collège",
    "lycee": "Un lycée",
}


def check_required_identifiers(kind: str, given: Collection[str]) -> None:
    """Raise :class:`InvalidIdentifier` unless ``given`` (names of the identifiers present)
    satisfies every requirement of ``kind``; the error names the first one missing."""
    present = set(given)
    for requirement in sorted(required_identifiers(kind), key=sorted):
        if present.isdisjoint(requirement):
            names = sorted(requirement, key=lambda name: (name != "rna", name))
            options = " ou ".join(_ARTICLES.get(name, name) for name in names)
            both = " (ou les deux)" if len(requirement) == 2 else ""
            raise InvalidIdentifier(
                names[0] if len(names) == 1 else "identifiers",
                f"{_KIND_LABELS.get(kind, kind)} donne {options}{both}.",
            )
