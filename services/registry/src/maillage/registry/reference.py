"""Reference data on schools: the Annuaire de l'éducation and the éducation prioritaire list.

A school's REP/REP+ status, pupil count and location come from here, never from what the school
declares. Two official files feed the ``reference_schools`` table:

- the "Annuaire de l'éducation" (data.education.gouv.fr, dataset ``fr-en-annuaire-education``,
  about 66,000 rows): a ``;`` CSV with one row per establishment and some 70 columns, of which
  this module reads thirteen (:data:`ANNUAIRE_COLUMNS`) and ignores the others;
- the éducation prioritaire list (dataset ``fr-en-etablissements-ep``): a ``;`` CSV with a UAI
  column and one REP column per school year (``ep_2022_2023``); the latest year is used.

Both files are parsed as streams (:func:`parse_annuaire`, :func:`parse_education_prioritaire`):
a bad row becomes a :class:`Rejected` with its line number and reason, and the good rows go on.
The importers upsert batches of :data:`BATCH_SIZE` rows in one transaction per file, so memory stays
flat whatever the file's size and a failed import leaves the table as it was.

Every school an import adds, or whose published fields (those of ``SchoolReferenced``: name,
place, REP/REP+, QPV) it changes, is published as a ``fr.maillage.registry.school.referenced.v1``
event on ``registry.schools``, through the outbox and in the import's transaction, so that other
services keep their own copy of the reference; re-importing the same file publishes nothing.

The éducation prioritaire list takes precedence over the annuaire's own
``appartenance_education_prioritaire`` column: once a school's status came from a list
(``education_prioritaire_source`` = ``ep_2022_2023``), re-importing the annuaire leaves it alone,
and only a list of the same or a later school year changes it.

Column names are matched after normalisation (case, accents, spaces: ``Code postal``,
``Code_postal`` and ``code_postal`` are the same column), since the site's exports differ by
whether they use field names or labels. The file is UTF-8 (a BOM is tolerated); a line that is not
valid UTF-8 is read as Windows-1252, which is what a spreadsheet re-save produces.
"""

from __future__ import annotations

import csv
import math
import re
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from maillage.common.catalog import SchoolReferenced
from maillage.common.outbox import publish_many
from maillage.registry import identifiers
from maillage.registry.identifiers import InvalidIdentifier

T = TypeVar("T")
BATCH_SIZE = 1000
EDUCATION_PRIORITAIRE = frozenset({"REP", "REP+"})
ANNUAIRE_SOURCE = "annuaire"

# ReferenceSchool attribute → the annuaire's column (normalised name).
ANNUAIRE_COLUMNS = {
    "uai": "identifiant_de_l_etablissement",
    "name": "nom_etablissement",
    "type": "type_etablissement",
    "public_private": "statut_public_prive",
    "postal_code": "code_postal",
    "commune_code": "code_commune",
    "commune_name": "nom_commune",
    "departement": "code_departement",
    "academie": "code_academie",
    "education_prioritaire": "appartenance_education_prioritaire",
    "latitude": "latitude",
    "longitude": "longitude",
    "pupils": "nombre_d_eleves",
}
# Without these the file is not an annuaire; the others may be missing (their values are null).
REQUIRED_ANNUAIRE_COLUMNS = ("identifiant_de_l_etablissement", "nom_etablissement")

# Candidate names of the UAI column of the éducation prioritaire list, in order of preference.
EP_UAI_COLUMNS = ("uai", "identifiant_de_l_etablissement", "code_uai", "numero_uai", "uai_etab")
EP_SCHOOL_YEAR = re.compile(r"^ep_(\d{4})_(\d{4})$")
# Optional columns of the list: is a quartier prioritaire (QPV) near the school, and which one.
EP_QPV_FLAG_COLUMNS = ("qp_a_proximite_o_n", "qpv_a_proximite_o_n", "qp_a_proximite_on")
EP_QPV_CODE_COLUMNS = ("code_qp_a_proximite", "qp_a_proximite", "code_qpv", "code_qp")

Progress = Callable[[int, int], None]
"""Called as rows are read, with (bytes read so far, rows read so far)."""


class ReferenceFormatError(ValueError):
    """The file is not in the expected format at all (its header): nothing was imported."""


@dataclass(frozen=True, slots=True)
class ReferenceSchool:
    """One establishment of the Annuaire de l'éducation (a row of ``reference_schools``)."""

    uai: str
    name: str
    type: str  # type_etablissement as published: "Collège", "Lycée", "Ecole", "EREA"...
    public_private: str | None = None  # "public" | "prive"
    postal_code: str | None = None
    commune_code: str | None = None  # code commune INSEE
    commune_name: str | None = None
    departement: str | None = None  # INSEE form: "94", "2A", "971"
    academie: str | None = None  # code_academie as published ("24" is Créteil)
    education_prioritaire: str | None = None  # "REP" | "REP+" | None
    latitude: float | None = None
    longitude: float | None = None
    pupils: int | None = None
    education_prioritaire_source: str = ANNUAIRE_SOURCE
    qpv_proximity: bool | None = None  # from the éducation prioritaire list
    qpv_code: str | None = None  # "annuaire" or "ep_2022_2023"...


@dataclass(frozen=True, slots=True)
class Rejected:
    """A row left out of an import: its line in the file (header = line 1), UAI if any, why."""

    line_number: int
    uai: str | None
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line_number}" + (f" ({self.uai})" if self.uai else "")
        return f"{where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class PrioritaireStatus:
    """One row of the éducation prioritaire list: a school's status for ``school_year``."""

    line_number: int
    uai: str
    status: str | None  # "REP" | "REP+" | None (not in éducation prioritaire)
    school_year: str  # the column it came from, e.g. "ep_2022_2023"
    qpv_proximity: bool | None = None  # None when the list has no such column
    qpv_code: str | None = None


@dataclass
class ImportSummary:
    inserted: int = 0
    updated: int = 0
    published: int = 0  # schools new or changed in what is published (registry.schools)
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.inserted + self.updated + len(self.rejected)


@dataclass
class EducationPrioritaireSummary:
    school_year: str | None = None
    updated: int = 0  # schools whose status was set from the list
    not_found: int = 0  # UAIs of the list absent from reference_schools (import the annuaire first)
    superseded: int = 0  # schools whose status already came from a later school year's list
    published: int = 0  # schools whose published status or QPV changed (registry.schools)
    rejected: list[Rejected] = field(default_factory=list)


# --- CSV reading ---------------------------------------------------------------------------------


def column_name(raw: str) -> str:
    """Normalise a header cell: ``"\\ufeffCode postal"`` → ``code_postal``."""
    text = unicodedata.normalize("NFKD", raw.replace("\ufeff", "").strip())
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return re.sub(r"[^a-z0-9]+", "_", text).strip("_")


def _rows(lines: Iterable[str]) -> Iterator[tuple[int, list[str] | csv.Error]]:
    """(line number where the record starts, fields or the CSV error), header included."""
    reader = csv.reader(lines, delimiter=";", quotechar='"')
    end = 0
    while True:
        try:
            row: list[str] | csv.Error = next(reader)
        except StopIteration:
            return
        except csv.Error as error:  # the reader resumes at the next line
            row = error
        start, end = end + 1, reader.line_num
        yield start, row


def _header(
    rows: Iterator[tuple[int, list[str] | csv.Error]], what: str
) -> tuple[dict[str, int], int]:
    """The header's columns (normalised name → position) and its number of fields.

    Lines before the header that start with ``#`` are comments (the demo samples say there that
    they are samples); the official files have none.
    """
    for _, row in rows:
        if isinstance(row, csv.Error):
            raise ReferenceFormatError(f"cannot read the header of the {what}: {row}")
        if not any(cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        index: dict[str, int] = {}
        for position, cell in enumerate(row):
            index.setdefault(column_name(cell), position)
        return index, len(row)
    raise ReferenceFormatError(f"the {what} is empty: no header line")


def _blank(row: list[str]) -> bool:
    return not any(cell.strip() for cell in row)


class _SeenUais:
    """UAIs already accepted, as a bitmap of their 7 digits: 1.25 MB whatever the file's size."""

    def __init__(self) -> None:
        self._bits = bytearray(10_000_000 // 8)

    def add(self, uai: str) -> bool:
        """Record ``uai``; False when it was already there."""
        number = int(uai[:7])
        byte, bit = number >> 3, 1 << (number & 7)
        if self._bits[byte] & bit:
            return False
        self._bits[byte] |= bit
        return True


# --- The annuaire --------------------------------------------------------------------------------


def parse_annuaire(lines: Iterable[str]) -> Iterator[ReferenceSchool | Rejected]:
    """Parse the Annuaire de l'éducation CSV, one row at a time.

    ``lines`` is any iterable of text lines (an open file, a list). Yields a
    :class:`ReferenceSchool` per valid row and a :class:`Rejected` per invalid one; raises
    :class:`ReferenceFormatError` when the header lacks the UAI or name column.
    """
    rows = _rows(lines)
    index, width = _header(rows, "Annuaire de l'éducation CSV")
    missing = [name for name in REQUIRED_ANNUAIRE_COLUMNS if name not in index]
    if missing:
        raise ReferenceFormatError(
            f"not an Annuaire de l'éducation CSV (';'-separated): no column {', '.join(missing)} "
            f"in the header (found: {', '.join(list(index)[:8])}{'...' if len(index) > 8 else ''})"
        )
    seen = _SeenUais()
    for line_number, row in rows:
        if isinstance(row, csv.Error):
            yield Rejected(line_number, None, f"unreadable CSV: {row}")
            continue
        if _blank(row):
            continue
        item = _annuaire_row(row, line_number, index, width)
        if isinstance(item, ReferenceSchool) and not seen.add(item.uai):
            item = Rejected(
                line_number, item.uai, f"UAI {item.uai} appears earlier in the file; row ignored"
            )
        yield item


def _annuaire_row(
    row: list[str], line_number: int, index: dict[str, int], width: int
) -> ReferenceSchool | Rejected:
    def cell(column: str) -> str:
        position = index.get(column)
        if position is None or position >= len(row):
            return ""
        return row[position].strip()

    raw_uai = cell("identifiant_de_l_etablissement")
    if len(row) < width or any(extra.strip() for extra in row[width:]):
        return Rejected(
            line_number,
            raw_uai or None,
            f"{len(row)} fields where the header has {width} "
            "(a truncated line, or a ';' inside an unquoted field?)",
        )
    problems: list[str] = []

    def check(column: str, parse: Callable[[str], Any]) -> Any:
        try:
            return parse(cell(column))
        except ValueError as error:
            problems.append(f"{column}: {error}")
            return None

    uai = check("identifiant_de_l_etablissement", _uai)
    name = check("nom_etablissement", _required_text)
    kind = check("type_etablissement", _required_text) if "type_etablissement" in index else ""
    public_private = check("statut_public_prive", _public_private)
    postal_code = check("code_postal", _postal_code)
    commune_code = check("code_commune", _commune_code)
    departement = check("code_departement", _departement)
    education_prioritaire = check("appartenance_education_prioritaire", _education_prioritaire)
    latitude = check("latitude", lambda text: _coordinate(text, -90.0, 90.0))
    longitude = check("longitude", lambda text: _coordinate(text, -180.0, 180.0))
    if (latitude is None) != (longitude is None) and not any(
        p.startswith(("latitude", "longitude")) for p in problems
    ):
        problems.append("latitude/longitude: one is given without the other")
    pupils = check("nombre_d_eleves", _pupils)
    if problems:
        return Rejected(line_number, uai or raw_uai or None, "; ".join(problems))
    if departement is None:
        try:
            departement = identifiers.uai_departement(uai)
        except InvalidIdentifier:
            departement = None
    return ReferenceSchool(
        uai=uai,
        name=name,
        type=kind or "",
        public_private=public_private,
        postal_code=postal_code,
        commune_code=commune_code,
        commune_name=cell("nom_commune") or None,
        departement=departement,
        academie=cell("code_academie") or None,
        education_prioritaire=education_prioritaire,
        latitude=latitude,
        longitude=longitude,
        pupils=pupils,
    )


def _uai(text: str) -> str:
    if not text:
        raise ValueError("the UAI is missing")
    return identifiers.uai(text)


def _required_text(text: str) -> str:
    if not text:
        raise ValueError("empty")
    return " ".join(text.split())


def _public_private(text: str) -> str | None:
    if not text:
        return None
    normalised = column_name(text)
    if normalised in {"public", "prive"}:
        return normalised
    raise ValueError(f"{text!r} is neither Public nor Privé")


def _zero_padded(text: str) -> str:
    # A spreadsheet turns 01000 into 1000: put the zero back.
    return text.zfill(5) if len(text) == 4 and text.isdigit() else text


def _postal_code(text: str) -> str | None:
    if not text:
        return None
    code = _zero_padded(text)
    if len(code) == 5 and code.isdigit():
        return code
    raise ValueError(f"postal code {text!r} is not 5 digits")


def _commune_code(text: str) -> str | None:
    return identifiers.insee_commune(_zero_padded(text)) if text else None


def _departement(text: str) -> str | None:
    return identifiers.departement(text) if text else None


def _education_prioritaire(text: str) -> str | None:
    status = text.upper().replace(" ", "")
    if not status:
        return None
    if status in EDUCATION_PRIORITAIRE:
        return status
    raise ValueError(f"{text!r} is not REP, REP+ or empty")


def _coordinate(text: str, low: float, high: float) -> float | None:
    if not text:
        return None
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{text} is outside [{low:g}, {high:g}]")
    return value


def _pupils(text: str) -> int | None:
    cleaned = text.replace(" ", "").replace("\u00a0", "").replace("\u202f", "")
    if not cleaned:
        return None
    try:
        number = float(cleaned)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of pupils") from None
    if not number.is_integer() or number < 0:
        raise ValueError(f"{text!r} is not a number of pupils")
    return int(number)


# --- The éducation prioritaire list --------------------------------------------------------------


def parse_education_prioritaire(lines: Iterable[str]) -> Iterator[PrioritaireStatus | Rejected]:
    """Parse the éducation prioritaire list (``fr-en-etablissements-ep``), one row at a time.

    The status is read from the latest ``ep_YYYY_YYYY`` column (``REP``, ``REP+`` or empty).
    Raises :class:`ReferenceFormatError` when there is no UAI column or no such column.
    """
    rows = _rows(lines)
    index, _ = _header(rows, "éducation prioritaire CSV")
    uai_column = next((name for name in EP_UAI_COLUMNS if name in index), None)
    years = [name for name in index if EP_SCHOOL_YEAR.match(name)]
    if uai_column is None or not years:
        raise ReferenceFormatError(
            "not an éducation prioritaire list (';'-separated): it needs a UAI column "
            f"({' or '.join(EP_UAI_COLUMNS)}) and a school-year column such as ep_2022_2023 "
            f"(found: {', '.join(list(index)[:8])}{'...' if len(index) > 8 else ''})"
        )
    year = max(years)  # ep_YYYY_YYYY sort by year
    uai_position, year_position = index[uai_column], index[year]
    flag_column = next((name for name in EP_QPV_FLAG_COLUMNS if name in index), None)
    code_column = next((name for name in EP_QPV_CODE_COLUMNS if name in index), None)
    seen = _SeenUais()
    for line_number, row in rows:
        if isinstance(row, csv.Error):
            yield Rejected(line_number, None, f"unreadable CSV: {row}")
            continue
        if _blank(row):
            continue
        raw_uai = row[uai_position].strip() if uai_position < len(row) else ""
        if year_position >= len(row):
            yield Rejected(line_number, raw_uai or None, f"the line has no {year} field")
            continue
        problems: list[str] = []
        try:
            uai = _uai(raw_uai)
        except ValueError as error:
            problems.append(f"{uai_column}: {error}")
        try:
            status = _education_prioritaire(row[year_position].strip())
        except ValueError as error:
            problems.append(f"{year}: {error}")
        qpv_proximity, qpv_code = None, None
        if flag_column is not None:
            flag = _field(row, index[flag_column]).upper()
            if flag in ("O", "OUI", "1", "TRUE"):
                qpv_proximity = True
            elif flag in ("N", "NON", "0", "FALSE"):
                qpv_proximity = False
            elif flag:
                problems.append(f"{flag_column}: {flag!r} is not O or N")
        if code_column is not None and (code := _field(row, index[code_column])):
            try:
                qpv_code = identifiers.qpv(code)
            except identifiers.InvalidIdentifier as error:
                problems.append(f"{code_column}: {error}")
            if qpv_proximity is None:
                qpv_proximity = True
        if problems:
            yield Rejected(line_number, raw_uai or None, "; ".join(problems))
        elif not seen.add(uai):
            yield Rejected(line_number, uai, f"UAI {uai} appears earlier in the file; row ignored")
        else:
            yield PrioritaireStatus(line_number, uai, status, year, qpv_proximity, qpv_code)


def _field(row: list[str], position: int) -> str:
    return row[position].strip() if position < len(row) else ""


# --- Reading a file with its progress ------------------------------------------------------------


class _FileLines:
    """The lines of a file as text, counting the bytes read (for a progress bar)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bytes_read = 0

    def __iter__(self) -> Iterator[str]:
        with self.path.open("rb") as binary:
            for raw in binary:
                self.bytes_read += len(raw)
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError:
                    yield raw.decode("cp1252", errors="replace")


# --- The database --------------------------------------------------------------------------------

# `previous` is read in the statement's snapshot, before the upsert: a school is changed when it
# is new or its version moved. The version moves when a published column changes, or when the
# school was never published (version 0).
_UPSERT_SCHOOLS = """
WITH incoming AS (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
        $8::text[], $9::text[], $10::text[], $11::float8[], $12::float8[], $13::int4[]
    ) AS incoming (
        uai, name, type, public_private, postal_code, commune_code, commune_name, departement,
        academie, education_prioritaire, latitude, longitude, pupils
    )
), previous AS (
    SELECT uai, version FROM reference_schools WHERE uai IN (SELECT uai FROM incoming)
), upserted AS (
    INSERT INTO reference_schools AS school (
        uai, name, type, public_private, postal_code, commune_code, commune_name, departement,
        academie, education_prioritaire, education_prioritaire_source, latitude, longitude,
        pupils, version, updated_at
    )
    SELECT uai, name, type, public_private, postal_code, commune_code, commune_name,
           departement, academie, education_prioritaire, 'annuaire', latitude, longitude, pupils,
           1, now()
    FROM incoming
    ON CONFLICT (uai) DO UPDATE SET
        name = EXCLUDED.name,
        type = EXCLUDED.type,
        public_private = EXCLUDED.public_private,
        postal_code = EXCLUDED.postal_code,
        commune_code = EXCLUDED.commune_code,
        commune_name = EXCLUDED.commune_name,
        departement = EXCLUDED.departement,
        academie = EXCLUDED.academie,
        -- A status taken from the éducation prioritaire list outranks the annuaire's column.
        education_prioritaire = CASE WHEN school.education_prioritaire_source = 'annuaire'
            THEN EXCLUDED.education_prioritaire ELSE school.education_prioritaire END,
        latitude = EXCLUDED.latitude,
        longitude = EXCLUDED.longitude,
        pupils = EXCLUDED.pupils,
        version = school.version + CASE
            WHEN school.version = 0
              OR (school.name, school.type, school.public_private, school.commune_code,
                  school.commune_name, school.departement, school.academie, school.latitude,
                  school.longitude)
                 IS DISTINCT FROM
                 (EXCLUDED.name, EXCLUDED.type, EXCLUDED.public_private, EXCLUDED.commune_code,
                  EXCLUDED.commune_name, EXCLUDED.departement, EXCLUDED.academie,
                  EXCLUDED.latitude, EXCLUDED.longitude)
              OR (school.education_prioritaire_source = 'annuaire' AND
                  school.education_prioritaire IS DISTINCT FROM EXCLUDED.education_prioritaire)
            THEN 1 ELSE 0 END,
        updated_at = now()
    RETURNING school.*, (xmax = 0) AS inserted
)
SELECT school.inserted, school.version <> coalesce(previous.version, 0) AS changed,
       school.uai, school.name, school.type, school.public_private, school.departement,
       school.academie, school.commune_code, school.commune_name, school.education_prioritaire,
       school.qpv_proximity, school.qpv_code, school.latitude, school.longitude, school.version
FROM upserted AS school LEFT JOIN previous USING (uai)
"""

# One row per school of the list found in reference_schools: whether the list applied to it
# (not superseded by a later year's list) and whether that changed what is published of it.
_SET_EDUCATION_PRIORITAIRE = """
WITH incoming AS (
    SELECT * FROM unnest($1::text[], $2::text[], $4::boolean[], $5::text[])
        AS incoming (uai, status, qpv_proximity, qpv_code)
), target AS (
    SELECT school.uai, school.version, next.*,
           school.version = 0
           OR (school.education_prioritaire, school.qpv_proximity, school.qpv_code)
              IS DISTINCT FROM (next.education_prioritaire, next.qpv_proximity, next.qpv_code)
           AS changed
    FROM incoming
    JOIN reference_schools AS school USING (uai)
    CROSS JOIN LATERAL (
        SELECT incoming.status AS education_prioritaire,
               coalesce(incoming.qpv_proximity, school.qpv_proximity) AS qpv_proximity,
               CASE WHEN incoming.qpv_proximity IS NULL THEN school.qpv_code
                    ELSE incoming.qpv_code END AS qpv_code
    ) AS next
    WHERE school.education_prioritaire_source = 'annuaire'
       OR school.education_prioritaire_source <= $3
), updated AS (
    UPDATE reference_schools AS school
    SET education_prioritaire = target.education_prioritaire,
        education_prioritaire_source = $3,
        qpv_proximity = target.qpv_proximity,
        qpv_code = target.qpv_code,
        version = target.version + target.changed::int,
        updated_at = now()
    FROM target
    WHERE school.uai = target.uai
    RETURNING school.*
)
SELECT school.uai IS NOT NULL AS applied, coalesce(target.changed, false) AS changed,
       school.uai, school.name, school.type, school.public_private, school.departement,
       school.academie, school.commune_code, school.commune_name, school.education_prioritaire,
       school.qpv_proximity, school.qpv_code, school.latitude, school.longitude, school.version
FROM incoming
JOIN reference_schools AS found USING (uai)
LEFT JOIN target USING (uai)
LEFT JOIN updated AS school USING (uai)
"""

# Imports of reference schools take this lock for their whole transaction: one import at a time
# (it is also outbox.publish_many's lock for the topic, taken before the first batch), so the
# events of a school are in the order of the imports that wrote them.
_IMPORT_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('registry.schools', 0))"


_LOOKUP_SCHOOL = """
SELECT uai, name, type, public_private, postal_code, commune_code, commune_name, departement,
       academie, education_prioritaire, latitude, longitude, pupils, education_prioritaire_source,
       qpv_proximity, qpv_code
FROM reference_schools
WHERE uai = $1
"""


async def upsert_schools(
    connection: asyncpg.Connection, batch: Sequence[ReferenceSchool]
) -> tuple[int, int, int]:
    """Insert or update ``batch`` (distinct UAIs) in one statement and publish the schools that
    are new or changed; return (inserted, updated, published)."""
    if not batch:
        return 0, 0, 0
    columns = [[getattr(school, attribute) for school in batch] for attribute in ANNUAIRE_COLUMNS]
    rows = await connection.fetch(_UPSERT_SCHOOLS, *columns)
    inserted = sum(1 for row in rows if row["inserted"])
    published = await publish_schools(connection, [row for row in rows if row["changed"]])
    return inserted, len(rows) - inserted, published


async def set_education_prioritaire(
    connection: asyncpg.Connection, batch: Sequence[PrioritaireStatus], school_year: str
) -> tuple[int, int, int]:
    """Apply ``batch`` of statuses from ``school_year``'s list and publish the schools it
    changed; return (updated, not found, published)."""
    if not batch:
        return 0, 0, 0
    rows = await connection.fetch(
        _SET_EDUCATION_PRIORITAIRE,
        [entry.uai for entry in batch],
        [entry.status for entry in batch],
        school_year,
        [entry.qpv_proximity for entry in batch],
        [entry.qpv_code for entry in batch],
    )
    published = await publish_schools(connection, [row for row in rows if row["changed"]])
    return sum(1 for row in rows if row["applied"]), len(batch) - len(rows), published


async def publish_schools(connection: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> int:
    """Record a ``SchoolReferenced`` event per row in the outbox, in one statement; return how
    many. Called inside the import's transaction (a national import is too many events for
    ``outbox.publish``'s lock per key: see ``outbox.publish_many``)."""
    events = [
        SchoolReferenced(**{name: row[name] for name in SchoolReferenced.model_fields})
        for row in rows
    ]
    return len(await publish_many(connection, events))


async def lookup_school(connection: asyncpg.Connection, uai: str) -> ReferenceSchool | None:
    """The reference row of the school ``uai``, or None when the annuaire does not list it.

    Raises :class:`InvalidIdentifier` when ``uai`` is not a valid UAI.
    """
    code = identifiers.uai(uai)
    record = await connection.fetchrow(_LOOKUP_SCHOOL, code)
    return None if record is None else ReferenceSchool(**dict(record))


async def import_annuaire(
    pool: asyncpg.Pool,
    path: Path,
    *,
    progress: Progress | None = None,
    batch_size: int = BATCH_SIZE,
) -> ImportSummary:
    """Import the Annuaire de l'éducation CSV at ``path`` into ``reference_schools``.

    Streams the file in batches of ``batch_size`` rows, all in one transaction: either the whole
    file is imported (its bad rows listed in the summary) or, on a database error, nothing is.
    """
    lines = _FileLines(Path(path))
    summary = ImportSummary()

    async def apply(connection: asyncpg.Connection, batch: list[ReferenceSchool]) -> None:
        inserted, updated, published = await upsert_schools(connection, batch)
        summary.inserted += inserted
        summary.updated += updated
        summary.published += published

    summary.rejected = await _import_in_batches(
        pool, lines, parse_annuaire(lines), apply, progress=progress, batch_size=batch_size
    )
    return summary


async def import_education_prioritaire(
    pool: asyncpg.Pool,
    path: Path,
    *,
    progress: Progress | None = None,
    batch_size: int = BATCH_SIZE,
) -> EducationPrioritaireSummary:
    """Set the REP/REP+ status of the schools listed in the éducation prioritaire CSV at ``path``.

    Import the annuaire first: a UAI of the list that is not in ``reference_schools`` is counted
    as not found. One transaction for the whole file.
    """
    lines = _FileLines(Path(path))
    summary = EducationPrioritaireSummary()

    async def apply(connection: asyncpg.Connection, batch: list[PrioritaireStatus]) -> None:
        school_year = batch[0].school_year
        summary.school_year = school_year
        updated, not_found, published = await set_education_prioritaire(
            connection, batch, school_year
        )
        summary.updated += updated
        summary.not_found += not_found
        summary.published += published
        summary.superseded += len(batch) - updated - not_found

    summary.rejected = await _import_in_batches(
        pool,
        lines,
        parse_education_prioritaire(lines),
        apply,
        progress=progress,
        batch_size=batch_size,
    )
    return summary


async def _import_in_batches(
    pool: asyncpg.Pool,
    lines: _FileLines,
    parsed: Iterable[T | Rejected],
    apply: Callable[[asyncpg.Connection, list[T]], Awaitable[None]],
    *,
    progress: Progress | None,
    batch_size: int,
) -> list[Rejected]:
    """Apply the good rows in batches of ``batch_size``, all in one transaction under the import
    lock (the whole file or, on a database error, nothing); return the rejected rows."""
    rejected: list[Rejected] = []
    batch: list[T] = []
    rows = 0
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute(_IMPORT_LOCK)
        for item in parsed:
            rows += 1
            if isinstance(item, Rejected):
                rejected.append(item)
            else:
                batch.append(item)
            if rows % batch_size == 0:
                if batch:
                    await apply(connection, batch)
                    batch = []
                if progress is not None:
                    progress(lines.bytes_read, rows)
        if batch:
            await apply(connection, batch)
    if progress is not None:
        progress(lines.bytes_read, rows)
    return rejected
