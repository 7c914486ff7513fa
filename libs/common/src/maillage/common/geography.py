"""French administrative geography every service needs: the académie of a département.

Pure data and a function (no I/O). The codes are the Annuaire de l'éducation's
``code_academie``.
"""

from __future__ import annotations

import re

# A département code in INSEE form, as every API takes it: two digits, 2A or 2B (Corsica), or
# 971 to 976 (the overseas départements). The same format as the services' query parameters.
DEPARTEMENT_PATTERN = r"^(0[1-9]|[1-8][0-9]|9[0-5]|2A|2B|97[1-6])$"
_DEPARTEMENT = re.compile(DEPARTEMENT_PATTERN)
MAX_DEPARTEMENTS = 20
"""The most départements a staff account (and its token) names (decision 64): a region has at
most 13, and an account acting for more is national instead. Keeps tokens small."""


def is_departement_code(code: str) -> bool:
    """Whether ``code`` has the format of a département code (``DEPARTEMENT_PATTERN``)."""
    return _DEPARTEMENT.fullmatch(code) is not None


# Codes académie as the Annuaire de l'éducation publishes them (``code_academie``): "24" is
# Créteil. Caen and Rouen merged into the académie de Normandie (70) in 2020.
_ACADEMIES: dict[str, tuple[str, ...]] = {
    "01": ("75",),  # Paris
    "02": ("04", "05", "13", "84"),  # Aix-Marseille
    "03": ("25", "39", "70", "90"),  # Besançon
    "04": ("24", "33", "40", "47", "64"),  # Bordeaux
    "06": ("03", "15", "43", "63"),  # Clermont-Ferrand
    "07": ("21", "58", "71", "89"),  # Dijon
    "08": ("07", "26", "38", "73", "74"),  # Grenoble
    "09": ("59", "62"),  # Lille
    "10": ("01", "42", "69"),  # Lyon
    "11": ("11", "30", "34", "48", "66"),  # Montpellier
    "12": ("54", "55", "57", "88"),  # Nancy-Metz
    "13": ("16", "17", "79", "86"),  # Poitiers
    "14": ("22", "29", "35", "56"),  # Rennes
    "15": ("67", "68"),  # Strasbourg
    "16": ("09", "12", "31", "32", "46", "65", "81", "82"),  # Toulouse
    "17": ("44", "49", "53", "72", "85"),  # Nantes
    "18": ("18", "28", "36", "37", "41", "45"),  # Orléans-Tours
    "19": ("02", "60", "80"),  # Amiens
    "21": ("19", "23", "87"),  # Limoges
    "22": ("06", "83"),  # Nice
    "23": ("08", "10", "51", "52"),  # Reims
    "24": ("77", "93", "94"),  # Créteil
    "25": ("78", "91", "92", "95"),  # Versailles
    "27": ("2A", "2B"),  # Corse
    "28": ("974",),  # La Réunion
    "31": ("972",),  # Martinique
    "32": ("971",),  # Guadeloupe
    "33": ("973",),  # Guyane
    "40": ("988",),  # Nouvelle-Calédonie
    "41": ("987",),  # Polynésie française
    "42": ("986",),  # Wallis et Futuna
    "43": ("976",),  # Mayotte
    "44": ("975",),  # Saint-Pierre-et-Miquelon
    "70": ("14", "27", "50", "61", "76"),  # Normandie
}
ACADEMIE_OF_DEPARTEMENT: dict[str, str] = {
    departement: academie
    for academie, departements in _ACADEMIES.items()
    for departement in departements
}


def academie_of(departement: str) -> str | None:
    """The code académie of a département, INSEE form ("94", "2A", "971") or the Éducation
    nationale's three characters ("094", "620"/"720" for Corsica, as a UAI starts); None if
    unknown."""
    code = departement.strip().upper()
    code = {"620": "2A", "720": "2B"}.get(code, code)
    if len(code) == 3 and code[0] == "0":
        code = code[1:]
    return ACADEMIE_OF_DEPARTEMENT.get(code)
