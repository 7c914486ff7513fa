"""Reading an official CSV file so that every one of its lines is accounted for.

The reference files come from spreadsheets and exports, and carry their accidents: a quote opened
and never closed, a NUL byte, a line of Windows-1252 in a UTF-8 file, a row with a field too many,
a last line cut short. Python's ``csv`` reader, left alone, lets one unclosed quote swallow every
line after it into one field. Here a file is read as a header, then records, with these rules:

1. Each line is UTF-8 (a BOM is allowed), else Windows-1252; a line that is neither is rejected
   by itself, never decoded with replacement characters. A UTF-16 file, or one whose lines end
   in a lone CR, is refused as a whole: nothing in it could be read line by line.
2. Before the header, empty lines and lines starting with ``#`` are skipped (the demo samples say
   there what they are); the header is the first other line. Its delimiter is found, among
   ``;``, ``,`` and tab, as the one whose columns the caller recognises.
3. After the header, each line starts a record, unless it continues one: a quoted field may hold
   line breaks, so a line whose quote stays open is joined with the next ones, at most
   :data:`MAX_RECORD_LINES`. If the quote never closes, or the joined lines do not make a record
   of the header's width, the quote was a mistake: that one line is rejected ("a quote opens and
   never closes") and the next lines are read afresh.
4. A line with a NUL byte, or that the ``csv`` module cannot read (strict mode), is rejected.

:class:`LineCount` says what became of every line after the header, so that a summary can show
``inserted + updated + merged + rejected + blank + continued = lines``.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

DELIMITERS = (";", ",", "\t")
DELIMITER_NAMES = {";": "';'", ",": "','", "\t": "tab"}
MAX_RECORD_LINES = 20  # a quoted field this long is an unclosed quote, not an address


class ReferenceFormatError(ValueError):
    """The file is not in the expected format at all (its header): nothing was imported."""


def column_name(raw: str) -> str:
    """Normalise a header cell: ``"\\ufeffCode postal"`` → ``code_postal``."""
    text = unicodedata.normalize("NFKD", raw.replace("\ufeff", "").strip())
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return re.sub(r"[^a-z0-9]+", "_", text).strip("_")


@dataclass
class LineCount:
    """What became of the lines after the header that no row accounts for."""

    lines: int = 0  # physical lines after the header
    blank: int = 0  # empty lines, or lines of empty fields
    continued: int = 0  # lines continuing a record whose quoted field holds a line break


@dataclass(frozen=True, slots=True)
class Record:
    """A record: the line it starts on, and its fields or why it cannot be read."""

    line_number: int
    fields: list[str] | None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    text: str
    problem: str | None = None


def _decode(raw: bytes) -> tuple[str, str | None]:
    """A line as UTF-8, else as Windows-1252 (what a spreadsheet re-save writes), else why not.

    Each line is decoded on its own: a file re-saved in part keeps every line readable, and a
    line whose bytes are neither is rejected rather than guessed (no replacement characters).
    """
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as error:
        where = f"byte {raw[error.start]:#04x} at column {error.start + 1}"
    try:
        return raw.decode("cp1252"), None
    except UnicodeDecodeError:
        return "", f"neither UTF-8 nor Windows-1252 (UTF-8 fails at {where})"


class Source:
    """The numbered lines of a file, or of a list of strings (tests); counts the bytes read."""

    def __init__(self, lines: Iterable[bytes] | Iterable[str]) -> None:
        self._lines = lines
        self.bytes_read = 0
        self.last_line = 0

    @classmethod
    def of_file(cls, path: Path) -> Source:
        return cls(_binary_lines(path))

    def __iter__(self) -> Iterator[_Line]:
        for number, raw in enumerate(self._lines, start=1):
            self.last_line = number
            if isinstance(raw, str):
                self.bytes_read += len(raw.encode("utf-8", "surrogatepass"))
                text, problem = raw, None
            else:
                self.bytes_read += len(raw)
                if number == 1 and raw.startswith((b"\xff\xfe", b"\xfe\xff")):
                    raise ReferenceFormatError(
                        "the file is UTF-16: save it as CSV UTF-8 (or Windows-1252)"
                    )
                text, problem = _decode(raw)
            yield _Line(number, text, problem)


def _binary_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as binary:
        yield from binary


class Table:
    """A CSV file read as a header, then records (see the module docstring for the rules)."""

    def __init__(
        self,
        source: Source,
        what: str,
        recognise: Callable[[dict[str, int]], bool],
        expected: str,
    ) -> None:
        """Read the header; :class:`ReferenceFormatError` when no delimiter gives columns that
        ``recognise`` accepts (``expected`` says which, for the message) or the file has none."""
        self.source = source
        self.what = what
        self.count = LineCount()
        self._lines = iter(source)
        self._pending: deque[_Line] = deque()
        self.header_line, header = self._header_line(what)
        self.delimiter, self.index, self.width = _delimiter(header, what, recognise, expected)

    @property
    def delimiter_name(self) -> str:
        return DELIMITER_NAMES[self.delimiter]

    def _header_line(self, what: str) -> tuple[int, str]:
        for line in self._lines:
            if line.problem is not None:
                raise ReferenceFormatError(
                    f"cannot read the {what}: line {line.number} is {line.problem}"
                )
            stripped = line.text.strip().strip("\ufeff")
            if not stripped or stripped.startswith("#"):
                continue
            if "\r" in line.text.rstrip("\r\n"):
                raise ReferenceFormatError(
                    f"the {what}'s lines end with a lone CR (an old Mac format): save it with "
                    "LF or CRLF line ends"
                )
            return line.number, line.text
        raise ReferenceFormatError(f"the {what} is empty: no header line")

    def records(self) -> Iterator[Record]:
        """The records after the header; blank ones are counted, not yielded."""
        while (line := self._next()) is not None:
            record = self._record(line)
            if record.fields is not None and not any(cell.strip() for cell in record.fields):
                self.count.blank += 1
                continue
            yield record
        self.count.lines = self.source.last_line - self.header_line

    def _next(self) -> _Line | None:
        return self._pending.popleft() if self._pending else next(self._lines, None)

    def _record(self, line: _Line) -> Record:
        if line.problem is not None:
            return Record(line.number, None, f"line is {line.problem}")
        if "\x00" in line.text:
            return Record(line.number, None, f"NUL byte at column {line.text.index(chr(0)) + 1}")
        joined = [line]
        while True:
            fields = _parse([part.text for part in joined], self.delimiter)
            if fields is not _OPEN or len(joined) == MAX_RECORD_LINES:
                break
            following = self._next()
            if following is None:
                break
            if following.problem is not None or "\x00" in following.text:
                self._pending.appendleft(following)
                break
            joined.append(following)
        if isinstance(fields, list) and (len(joined) == 1 or len(fields) == self.width):
            self.count.continued += len(joined) - 1
            return Record(line.number, fields)
        self._pending.extendleft(reversed(joined[1:]))  # read them afresh
        if isinstance(fields, str) and len(joined) == 1:
            return Record(line.number, None, f"unreadable CSV: {fields}")
        return Record(
            line.number,
            None,
            "a quote opens on this line and never closes (the lines after it are read "
            "on their own)",
        )


_OPEN = object()  # the record's quoted field is still open at the end of its lines


def _parse(lines: list[str], delimiter: str) -> list[str] | str | object:
    """The fields of one record over ``lines``, ``_OPEN``, or the ``csv`` module's complaint."""
    try:
        return next(csv.reader(lines, delimiter=delimiter, quotechar='"', strict=True))
    except csv.Error as error:
        return _OPEN if "unexpected end of data" in str(error) else str(error)
    except StopIteration:
        return []


def _delimiter(
    header: str, what: str, recognise: Callable[[dict[str, int]], bool], expected: str
) -> tuple[str, dict[str, int], int]:
    readings: list[tuple[str, dict[str, int], int]] = []
    for delimiter in DELIMITERS:
        fields = _parse([header], delimiter)
        if not isinstance(fields, list):
            continue
        index: dict[str, int] = {}
        for position, cell in enumerate(fields):
            index.setdefault(column_name(cell), position)
        readings.append((delimiter, index, len(fields)))
    recognised = [reading for reading in readings if recognise(reading[1])]
    if recognised:
        return max(recognised, key=lambda reading: reading[2])
    if not readings:
        raise ReferenceFormatError(f"cannot read the header of the {what}")
    delimiter, index, _ = max(readings, key=lambda reading: reading[2])
    found = ", ".join(list(index)[:8]) + ("..." if len(index) > 8 else "")
    raise ReferenceFormatError(
        f"not {what}: {expected} (read with {DELIMITER_NAMES[delimiter]} as the delimiter, the "
        f"header has: {found}; ';', ',' and tab were tried)"
    )
