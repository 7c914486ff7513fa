"""Reference files as they really come: broken CSV structure, the ministry's REP list, several
lines for one establishment, and facts that contradict each other.

Every import here checks the accounting: every physical line after the header is a school
(inserted or updated), merged into an earlier line, rejected with its reason, blank, or the
continuation of a quoted field; nothing vanishes.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from maillage.cli import registry as registry_cli
from maillage.registry import geography, identifiers
from maillage.registry.csvfile import ReferenceFormatError, Source
from maillage.registry.reference import (
    AnnuaireReading,
    PrioritaireStatus,
    ReferenceSchool,
    Rejected,
    annuaire_table,
    import_annuaire,
    import_reference,
    parse_education_prioritaire,
)

HEADER = "identifiant_de_l_etablissement;nom_etablissement;type_etablissement;code_departement"


def rep_list() -> Path:
    """The ministry's list of REP and REP+ for the 2022 rentrée (shared/data)."""
    for folder in Path(__file__).resolve().parents:
        candidate = folder / "shared" / "data" / "liste-des-rep-et-rep-rentree-2022.csv"
        if candidate.exists():
            return candidate
    pytest.skip("shared/data/liste-des-rep-et-rep-rentree-2022.csv is not on this machine")


def uai_for(number: int) -> str:
    digits = f"{number:07d}"
    return digits + identifiers.uai_check_letter(digits)


def read(data: bytes | list[str]) -> tuple[list[ReferenceSchool | Rejected], AnnuaireReading]:
    lines = io.BytesIO(data).readlines() if isinstance(data, bytes) else data
    reading = AnnuaireReading(annuaire_table(Source(lines)))
    return list(reading), reading


def accounted(items: list[ReferenceSchool | Rejected], reading: AnnuaireReading) -> int:
    count = reading.table.count
    return len(items) + reading.merged + count.blank + count.continued


# --- 2. No structural problem drops rows silently ------------------------------------------------


async def test_the_issues_unclosed_quote_rejects_its_line_and_keeps_the_three_after(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    path = tmp_path / "annuaire.csv"
    path.write_text(
        "identifiant_de_l_etablissement;nom_etablissement;type_etablissement;code_postal;"
        "code_commune;code_departement\n"
        '0180777X;"Collège Les Tilleuls;Collège;18000;18033;018\n'
        "0180778Y;Collège Jean Moulin;Collège;18000;18033;018\n"
        "0180779Z;Collège Victor Hugo;Collège;18000;18033;018\n"
        "0180780A;Lycée Alain-Fournier;Lycée;18000;18033;018\n",
        encoding="utf-8",
    )
    summary = await import_annuaire(pool, path)
    assert [(r.line_number, r.reason) for r in summary.rejected] == [
        (
            2,
            f"{OPEN} (the lines after it are read on their own)",
        )
    ]
    assert summary.inserted == 3
    assert (summary.lines, summary.accounted) == (4, 4)
    uais = {row["uai"] for row in await pool.fetch("SELECT uai FROM reference_schools")}
    assert uais == {"0180778Y", "0180779Z", "0180780A"}


GOOD = [f"{uai_for(940_100 + n)};Collège {n};Collège;094" for n in range(6)]
OPEN = "a quote opens on this line and never closes"


def lines(*parts: str) -> bytes:
    return "\n".join(parts).encode()


# (file, which of GOOD are imported, the rejected lines with a fragment of their reason)
CORPUS: list[tuple[str, bytes, list[int], dict[int, str]]] = [
    (
        "unclosed quote mid-file, a quoted field later",
        lines(
            HEADER,
            GOOD[0],
            GOOD[1].replace("Collège 1", '"Collège 1'),
            GOOD[2],
            GOOD[3].replace("Collège 3", '"Collège ""3"""'),
            GOOD[4],
        ),
        [0, 2, 3, 4],
        {3: OPEN},
    ),
    (
        "a quoted line break, then an unclosed quote on the last line",
        lines(
            HEADER,
            GOOD[0].replace("Collège 0", '"Collège\n0"'),
            GOOD[1],
            GOOD[2].replace("Collège 2", '"Collège 2'),
        ),
        [0, 1],
        {5: OPEN},
    ),
    (
        "NUL bytes",
        lines(HEADER, GOOD[0], GOOD[1].replace("Collège", "Coll\0ège"), GOOD[2]),
        [0, 2],
        {3: "NUL byte at column 14"},
    ),
    (
        "too many and too few fields",
        lines(HEADER, GOOD[0] + ";extra", GOOD[1] + ";", GOOD[2].rsplit(";", 1)[0]),
        [1],
        {2: "5 fields where the header has 4", 4: "3 fields where the header has 4"},
    ),
    (
        "Windows-1252 and UTF-8 lines mixed",
        b"\n".join(
            [HEADER.encode(), GOOD[0].encode("cp1252"), GOOD[1].encode(), GOOD[2].encode("cp1252")]
        ),
        [0, 1, 2],
        {},
    ),
    (
        "bytes that are neither UTF-8 nor Windows-1252",
        b"\n".join([HEADER.encode(), GOOD[0].encode(), b"\x81\x8d;x;y;094", GOOD[2].encode()]),
        [0, 2],
        {3: "neither UTF-8 nor Windows-1252 (UTF-8 fails at byte 0x81 at column 1)"},
    ),
    (
        "a truncated last line, CRLF endings, blank lines",
        "\r\n".join([HEADER, GOOD[0], "", ";;;", GOOD[1], GOOD[2][:14]]).encode(),
        [0, 1],
        {6: "2 fields where the header has 4"},
    ),
    (
        "a quote inside an unquoted field, text after a closing quote",
        lines(
            HEADER,
            GOOD[0].replace("Collège 0", 'Collège "0'),
            GOOD[1].replace("Collège 1", '"C" 1'),
        ),
        [0],
        {3: "unreadable CSV: ';' expected after '\"'"},
    ),
]


@pytest.mark.parametrize(
    ("data", "schools", "rejected"), [case[1:] for case in CORPUS], ids=[case[0] for case in CORPUS]
)
def test_every_line_of_a_broken_file_is_accounted_for(
    data: bytes, schools: list[int], rejected: dict[int, str]
) -> None:
    items, reading = read(data)
    found = [item for item in items if isinstance(item, ReferenceSchool)]
    assert (
        sorted(GOOD.index(next(g for g in GOOD if g.startswith(s.uai))) for s in found) == schools
    )
    assert all(school.name.startswith(("Collège", "C")) for school in found)
    refused = {item.line_number: item.reason for item in items if isinstance(item, Rejected)}
    assert set(refused) == set(rejected)
    for line, fragment in rejected.items():
        assert fragment in refused[line], refused[line]
    assert accounted(items, reading) == reading.table.count.lines == len(data.splitlines()) - 1


def test_a_windows_1252_line_keeps_its_accents() -> None:
    items, _ = read(b"\n".join([HEADER.encode(), GOOD[1].encode("cp1252")]))
    assert [item.name for item in items if isinstance(item, ReferenceSchool)] == ["Collège 1"]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (HEADER.encode("utf-16"), "UTF-16"),
        (f"{HEADER}\r{GOOD[0]}\r".encode(), "lone CR"),
        (b"", "empty"),
        (b"\n# a comment\n\n", "empty"),
    ],
)
def test_a_file_nothing_can_be_read_from_is_refused_whole(data: bytes, why: str) -> None:
    with pytest.raises(ReferenceFormatError, match=why):
        read(data)


DAMAGES = ("quote", "nul", "delimiter", "drop field", "cp1252", "cut")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 29), st.sampled_from(DAMAGES)), max_size=6))
def test_damage_anywhere_never_loses_a_line(damage: list[tuple[int, str]]) -> None:
    lines = [f"{uai_for(940_000 + n)};Collège n°{n};Collège;094\n" for n in range(30)]
    damaged = {}
    for index, kind in damage:
        line = lines[index]
        if kind == "quote":
            line = line.replace("Collège n", '"Collège n', 1)
        elif kind == "nul":
            line = line.replace("n°", "n\0")
        elif kind == "delimiter":
            line = line.replace("Collège n°", "Collège;n°", 1)
        elif kind == "drop field":
            line = line.replace(";Collège;", ";", 1)
        elif kind == "cut":
            line = line[:12] + "\n"
        damaged[index] = (line.encode("cp1252") if kind == "cp1252" else line.encode(), kind)
    data = (
        HEADER.encode()
        + b"\n"
        + b"".join(damaged.get(index, (line.encode(), ""))[0] for index, line in enumerate(lines))
    )
    items, reading = read(data)
    assert accounted(items, reading) == reading.table.count.lines == 30
    rejected = {item.line_number - 2 for item in items if isinstance(item, Rejected)}
    assert rejected <= set(damaged), "an undamaged line was rejected"
    if not any(kind == "quote" for _, kind in damaged.values()):
        found = {int(item.uai[3:7]) for item in items if isinstance(item, ReferenceSchool)}
        assert set(range(30)) - set(damaged) <= found, "an undamaged line was lost"


def test_two_files_are_one_transaction(database_url: str, tmp_path: Path) -> None:
    annuaire = tmp_path / "annuaire.csv"
    annuaire.write_text(f"{HEADER}\n{GOOD[0]}\n{GOOD[1]}\n", encoding="utf-8")
    wrong_list = tmp_path / "liste-rep.csv"
    runner = CliRunner()

    def run(*extra: str) -> Any:
        return runner.invoke(
            registry_cli.app,
            [
                "import-annuaire",
                str(annuaire),
                "--education-prioritaire",
                str(wrong_list),
                "--database-url",
                database_url,
                *extra,
            ],
        )

    for content, why in (
        (f"NUMERO;STATUT\n{uai_for(940_100)};REP\n", "not an éducation prioritaire list"),
        (f"NUMERO;EP\n{uai_for(940_100)};REP\n", "give it with --school-year 2022-2023"),
    ):
        wrong_list.write_text(content, encoding="utf-8")
        result = run()
        assert result.exit_code == 1, result.output
        assert why in result.output
        assert f"nothing was imported from {annuaire} or {wrong_list}" in result.output
        assert counts(database_url) == (0, 0)
    # With the school year given, both files are imported together.
    result = run("--school-year", "2022-2023")
    assert result.exit_code == 0, result.output
    assert "school year ep_2022_2023 (from the --school-year option)" in result.output
    assert "1 statuses set" in result.output
    assert counts(database_url) == (2, 3)  # two schools, published, one of them again


def counts(database_url: str) -> tuple[int, int]:
    async def query() -> tuple[int, int]:
        connection = await asyncpg.connect(database_url)
        try:
            schools = await connection.fetchval("SELECT count(*) FROM reference_schools")
            events = await connection.fetchval("SELECT count(*) FROM outbox")
            return schools, events
        finally:
            await connection.close()

    return asyncio.run(query())


# --- 3. The ministry's list of REP and REP+, and several lines for one UAI -----------------------


def annuaire_of(rep: Path, path: Path) -> Path:
    """An annuaire holding every school of the list, comma-separated."""
    with rep.open(encoding="utf-8") as source, path.open("w", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            ["identifiant_de_l_etablissement", "nom_etablissement", "type_etablissement"]
        )
        for row in csv.DictReader(source, delimiter=";"):
            if row["NUMERO"]:
                writer.writerow(
                    [
                        row["NUMERO"],
                        row["NOM DE L'ETABLISSEMENT"] or "École",
                        row["TYPE_DETABLISSEMENT"].title(),
                    ]
                )
    return path


async def test_the_ministrys_rep_list_is_read_whole(pool: asyncpg.Pool, tmp_path: Path) -> None:
    rep = rep_list()
    annuaire = annuaire_of(rep, tmp_path / "annuaire.csv")
    summary, listed = await import_reference(pool, annuaire, rep)
    assert summary is not None
    assert listed is not None
    assert (summary.inserted, summary.rejected, summary.delimiter) == (7708, [], "','")
    assert (listed.school_year, listed.school_year_from) == (
        "ep_2022_2023",
        f"the file's name, {rep.name}",
    )
    assert (listed.lines, listed.updated, listed.headings, listed.rejected) == (7719, 7708, 11, [])
    assert listed.accounted == listed.lines
    counts = dict(
        await pool.fetch(
            "SELECT education_prioritaire, count(*) FROM reference_schools"
            " WHERE type = 'College' GROUP BY 1"
        )
    )
    assert counts == {"REP+": 361, "REP": 731}  # as the list says (shared/data/README.md)
    sources = await pool.fetch(
        "SELECT DISTINCT education_prioritaire_source FROM reference_schools"
    )
    assert [row[0] for row in sources] == ["ep_2022_2023"]


@pytest.mark.parametrize("delimiter", [",", "\t"])
def test_the_rep_list_exported_with_another_delimiter_reads_the_same(
    tmp_path: Path, delimiter: str
) -> None:
    rep = rep_list()
    text = rep.read_text(encoding="utf-8")
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\n").writerows(
        csv.reader(io.StringIO(text), delimiter=";")
    )
    original = list(parse_education_prioritaire(text.splitlines(True), file_name=rep.name))
    converted = list(
        parse_education_prioritaire(out.getvalue().splitlines(True), school_year="2022-2023")
    )
    assert converted == original
    assert sum(isinstance(item, PrioritaireStatus) for item in original) == 7708


@pytest.mark.parametrize(
    ("name", "option", "expected"),
    [
        ("liste-des-rep-et-rep-rentree-2022.csv", None, "ep_2022_2023"),
        ("rep_2024-2025.csv", None, "ep_2024_2025"),
        ("liste-des-rep-et-rep-rentree-2022.csv", "2023-2024", "ep_2023_2024"),
        ("rep.csv", "2023", "ep_2023_2024"),
    ],
)
def test_the_lists_school_year_comes_from_the_option_or_the_name(
    name: str, option: str | None, expected: str
) -> None:
    lines = ["NUMERO;EP\n", "0940123Y;REP+\n"]
    (status,) = parse_education_prioritaire(lines, school_year=option, file_name=name)
    assert isinstance(status, PrioritaireStatus)
    assert status.school_year == expected


def test_a_wrong_school_year_option_is_refused() -> None:
    with pytest.raises(ValueError, match="two consecutive years"):
        list(parse_education_prioritaire(["NUMERO;EP\n"], school_year="2022-2024"))
    with pytest.raises(ReferenceFormatError, match="no ep_2030_2031 column"):
        list(parse_education_prioritaire(["uai;ep_2022_2023\n"], school_year="2030-2031"))


def test_the_lists_departement_must_agree_with_the_uai() -> None:
    lines = ["NUMERO;N°Département;EP\n", "0940123Y;94;REP\n", "0940123Y;69;REP\n", "0750654D;;REP"]
    items = list(parse_education_prioritaire(lines, school_year="2022-2023"))
    assert [type(item).__name__ for item in items] == [
        "PrioritaireStatus",
        "Rejected",
        "PrioritaireStatus",
    ]
    assert "département 69 contradicts the UAI, numbered by département 94" in items[1].reason


MULTI = (
    "identifiant_de_l_etablissement;nom_etablissement;type_etablissement;nombre_d_eleves;"
    "latitude;longitude;etablissement_multi_lignes\n"
)


def test_several_lines_marked_for_one_uai_are_one_school() -> None:
    items, reading = read(
        [
            MULTI,
            "0940123Y;Collège Robert Desnos;Collège;520;48.7442;2.3850;1\n",
            "0941147L;Lycée;Lycée;;;;0\n",
            "0940123Y;Collège Robert Desnos;Collège;;48.7443;2.3851;1\n",  # fills nothing, agrees
            "0940123Y;Collège R. Desnos;Collège;480;48.7442;2.3850;1\n",  # disagrees: flagged
            "0941147L;Lycée;Lycée;;;;0\n",  # not marked: a duplicate
            "0750654D;Lycée Henri-IV;Lycée;;;;1\n",
            "0750654D;Lycée Henri-IV;Lycée;2500;48.846;2.347;1\n",  # fills the pupils and place
            "0942815Z;Collège;Collège;300;48.70;2.40;1\n",
            "0942815Z;Collège;Collège;300;48.80;2.40;1\n",  # 11 km away: place doubtful
        ]
    )
    schools = {item.uai: item for item in items if isinstance(item, ReferenceSchool)}
    assert schools["0940123Y"].name == "Collège Robert Desnos"
    assert schools["0940123Y"].pupils == 520
    assert (schools["0750654D"].pupils, schools["0750654D"].latitude) == (2500, 48.846)
    assert (schools["0942815Z"].latitude, schools["0942815Z"].longitude) == (None, None)
    assert reading.merged == 4
    [duplicate] = [item for item in items if isinstance(item, Rejected)]
    assert (duplicate.line_number, duplicate.uai) == (6, "0941147L")
    flags = [(flag.line_number, flag.reason) for flag in reading.flagged]
    assert flags == [
        (5, "name 'Collège R. Desnos' differs from line 2's 'Collège Robert Desnos', kept"),
        (5, "pupils 480 differs from line 2's 520, kept"),
        (10, "coordinates 0.100° away from line 9's: both dropped"),
    ]
    assert accounted(items, reading) == reading.table.count.lines == 9


# --- 5. Facts that contradict each other ----------------------------------------------------------

PLACES = (
    "identifiant_de_l_etablissement;nom_etablissement;type_etablissement;code_commune;"
    "nom_commune;code_departement;latitude;longitude\n"
)


async def test_contradictions_are_rejected_or_their_doubtful_field_dropped(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    martinique, guadeloupe = uai_for(9_720_012), uai_for(9_710_045)
    rows = [
        # The issue's: Le Morne-Rouge (Martinique) with Lyon's coordinates...
        f"{martinique};Collège du Morne-Rouge;Collège;97218;Le Morne-Rouge;972;45.7640;4.8357",
        # ...and a Guadeloupe collège placed near Bordeaux.
        f"{guadeloupe};Collège de Baie-Mahault;Collège;97103;Baie-Mahault;971;44.8378;-0.5792",
        "0940123Y;Collège Robert Desnos;Collège;94054;Orly;972;48.7442;2.3850",  # dept ≠ UAI
        "0941147L;Lycée;Lycée;69123;Lyon;094;48.79;2.45",  # commune of another département
        "0750654D;Lycée Henri-IV;Lycée;75105;Paris 5e;075;0;0",  # null island
        f"{uai_for(9_710_777)};École de Marigot;Ecole;97801;Saint-Martin;978;18.0680;-63.0820",
        "6200001G;Collège Fesch;Collège;2A004;Ajaccio;02A;41.9192;8.7386",
    ]
    path = tmp_path / "annuaire.csv"
    path.write_text(PLACES + "\n".join(rows) + "\n", encoding="utf-8")
    summary = await import_annuaire(pool, path)
    assert [(r.line_number, r.reason) for r in summary.rejected] == [
        (4, "département 972 contradicts the UAI, numbered by département 94")
    ]
    assert [(f.line_number, f.reason) for f in summary.flagged] == [
        (2, "coordinates (45.764, 4.8357) lie outside département 972: coordinates dropped"),
        (3, "coordinates (44.8378, -0.5792) lie outside département 971: coordinates dropped"),
        (5, "commune 69123 is in département 69, not 94: commune dropped"),
        (6, "coordinates (0, 0) lie outside département 75: coordinates dropped"),
    ]
    assert summary.inserted == 6
    places = {
        row["uai"]: (row["commune_code"], row["latitude"], row["longitude"])
        for row in await pool.fetch("SELECT * FROM reference_schools")
    }
    assert places[martinique] == ("97218", None, None)
    assert places[guadeloupe] == ("97103", None, None)
    assert places["0941147L"] == (None, 48.79, 2.45)
    assert places["0750654D"] == ("75105", None, None)
    assert places[uai_for(9_710_777)] == ("97801", 18.068, -63.082)  # Saint-Martin: 971 UAIs
    assert places["6200001G"] == ("2A004", 41.9192, 8.7386)
    # The dropped coordinates travel as absent: the published event has none.
    payloads = {
        row["key"]: json.loads(row["payload"])
        for row in await pool.fetch("SELECT key, payload FROM outbox")
    }
    assert (payloads[martinique]["latitude"], payloads[martinique]["longitude"]) == (None, None)


async def test_a_reimport_that_drops_a_coordinate_publishes_its_absence(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    uai = uai_for(9_720_012)
    path = tmp_path / "annuaire.csv"
    path.write_text(PLACES + f"{uai};Collège;Collège;97218;Le Morne-Rouge;972;14.7695;-61.1335\n")
    await import_annuaire(pool, path)
    path.write_text(PLACES + f"{uai};Collège;Collège;97218;Le Morne-Rouge;972;45.7640;4.8357\n")
    again = await import_annuaire(pool, path)
    assert (again.updated, again.published) == (1, 1)
    last = await pool.fetchrow("SELECT payload FROM outbox ORDER BY id DESC LIMIT 1")
    assert last is not None
    event = json.loads(last["payload"])
    assert (event["latitude"], event["longitude"], event["version"]) == (None, None, 2)


@pytest.mark.parametrize(
    ("departement", "inside", "outside"),
    [
        ("972", (14.7695, -61.1335), (45.7640, 4.8357)),
        ("971", (16.2650, -61.5510), (44.8378, -0.5792)),
        ("69", (45.7640, 4.8357), (14.7695, -61.1335)),
        ("973", (2.17, -54.60), (4.0, -57.0)),  # Trois-Sauts in; Suriname out
        ("987", (-27.61, -144.33), (-17.5, -160.0)),  # Rapa in
        ("2B", (42.70, 9.45), (41.92, 8.10)),
    ],
)
def test_the_departement_boxes_hold_their_places(
    departement: str, inside: tuple[float, float], outside: tuple[float, float]
) -> None:
    box = geography.boxes()[departement]
    assert box.contains(*inside)
    assert not box.contains(*outside)


def test_every_departement_has_a_box() -> None:
    expected = {f"{n:02d}" for n in range(1, 96) if n != 20} | {"2A", "2B"}
    expected |= {"971", "972", "973", "974", "975", "976", "977", "978", "986", "987", "988"}
    assert set(geography.boxes()) == expected
