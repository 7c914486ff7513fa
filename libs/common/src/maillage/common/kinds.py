"""The kinds of value a client sends: numbers and booleans as JSON ones, text without tricks.

Numbers and booleans a client sends are JSON numbers and booleans, nothing else.

pydantic's lax mode reads ``true`` as the integer 1, ``"100"`` as 100 and ``1`` as ``true``: a
comptable paid a tranche one cent with ``"amount_cents": true``. Every integer, number and
boolean field of a request body uses these types instead of ``int``, ``float`` and ``bool``;
``tests/test_request_kinds.py`` walks every service's body models and fails on any that does
not. FastAPI validates the parsed document in Python mode, so the strictness is per field (a
model-wide ``strict=True`` would refuse the strings that carry UUIDs and dates). The OpenAPI
types stay ``integer``, ``number`` and ``boolean``. Refusals are 422 ``validation_failed``
(``int_type``, ``float_type``, ``bool_type``, worded in French by ``messages``).

- :data:`Int` refuses ``true``, ``"1"`` and ``1.0``;
- :data:`Float` takes ``1`` and ``1.5``, refuses ``true`` and ``"1.5"``;
- :data:`Bool` refuses ``1``, ``"true"`` and ``"yes"``.

Text people read has its kinds here too: :data:`Line` and :data:`Prose` refuse the characters
that hide or reorder text (a right-to-left override in a partner's legal name).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, Strict
from pydantic_core import PydanticCustomError

Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]


# --- text people read ----------------------------------------------------------------------------

# Characters that change how text around them shows, or show nothing: a partner named
# "\u202eELOCE" reads "ECOLE" backwards-forwards. Bidi controls (LRM, RLM, ALM, embeddings,
# overrides, isolates), zero-width and invisible characters (ZWSP, ZWNJ, ZWJ, word joiner,
# invisible operators, BOM, Mongolian vowel separator), and the C0 and C1 control characters.
_INVISIBLE = (
    "\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
    "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
)
_HIDDEN_IN_LINE = re.compile(f"[{_INVISIBLE}\t\n\r]")
_HIDDEN_IN_PROSE = re.compile(f"[{_INVISIBLE}]")


def hidden_character(value: str, *, multiline: bool) -> str | None:
    """The first character of ``value`` that text people read must not hold, else None. Tab,
    newline and carriage return are allowed in prose only."""
    found = (_HIDDEN_IN_PROSE if multiline else _HIDDEN_IN_LINE).search(value)
    return found.group() if found else None


def _check(value: object, *, multiline: bool) -> object:
    # Before pydantic's own checks, so that the length and pattern ones stay attached to the
    # string (``string_too_long``, not a generic ``too_long``); a non-string is theirs to refuse.
    if not isinstance(value, str):
        return value
    character = hidden_character(value, multiline=multiline)
    if character is not None:
        raise PydanticCustomError(
            "string_hidden_character",
            "The text holds the control or invisible character {character}",
            {"character": f"U+{ord(character):04X}", "multiline": multiline},
        )
    return value


def _line(value: object) -> object:
    return _check(value, multiline=False)


def _prose(value: object) -> object:
    return _check(value, multiline=True)


LINE_CHECK = BeforeValidator(_line)
PROSE_CHECK = BeforeValidator(_prose)
Line = Annotated[str, LINE_CHECK]
"""One line people read: a name, a title, a role, an e-mail address. Refuses (422
``string_hidden_character``) bidi controls, zero-width and invisible characters and every
control character, tab and newline included. Bound each field with ``Field(max_length=...)``
(``maillage.common.limits``)."""
LineOrNone = Annotated[str | None, LINE_CHECK]
"""An optional :data:`Line`. Not ``Line | None``: pydantic would then check its length as a
generic ``too_long`` rather than a ``string_too_long`` (the same for list items: write
``list[Annotated[str, Field(max_length=...), LINE_CHECK]]``)."""
Prose = Annotated[str, PROSE_CHECK]
"""Free text people read (a description, a reason, an address): as :data:`Line`, tab and
newlines allowed."""
ProseOrNone = Annotated[str | None, PROSE_CHECK]
TEXT_CHECKS = frozenset({_line, _prose})
"""The checks above: ``tests/test_request_kinds.py`` finds one on every free-text field."""
