"""Every integer, number and boolean a request body carries is strict (``maillage.common.kinds``).

pydantic's lax mode read ``"amount_cents": true`` as one cent and ``"budget_cents": "100"`` as
100. This test walks the body model of every route of every service, into lists, unions and
nested models, and names each ``int``, ``float`` or ``bool`` field that would still take a JSON
value of another type. The API tests of each service send such values over HTTP.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field, Strict, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from test_input_limits import SERVICES, build

from maillage.common.kinds import (
    TEXT_CHECKS,
    Bool,
    Float,
    Int,
    Line,
    LineOrNone,
    Prose,
    ProseOrNone,
)
from maillage.common.messages import validation_message

_UNIONS = (typing.Union, types.UnionType)
_ANY_TEXT = r"^[^\x00]*$"
# Strings that are not text people read, each checked by its own validator: official
# identifiers (SIRET, RNA, UAI, code commune, their check digits), URLs (notifications/ssrf.py).
IDENTIFIERS = frozenset({"siret", "rna", "uai", "commune_code", "url", "url[]"})


def body_routes(app: FastAPI) -> Iterator[APIRoute]:
    """Every route that takes a body, included routers unfolded."""

    def walk(routes: list[Any]) -> Iterator[APIRoute]:
        for route in routes:
            if hasattr(route, "original_router"):  # FastAPI's lazily included router
                yield from walk(route.original_router.routes)
            elif isinstance(route, APIRoute) and route.body_field is not None:
                yield route

    return walk(app.routes)


def lax_fields(annotation: Any, where: str, metadata: tuple[Any, ...] = ()) -> Iterator[str]:
    """``"NewConvention.budget_cents: int"``, for each number or boolean not strict, and
    ``"Registration.legal_name: str"`` for each free text (no pattern but the NUL one) that does
    not refuse hidden characters (``kinds.Line``, ``kinds.Prose``)."""
    seen: set[type[BaseModel]] = set()

    def visit(kind: Any, where: str, metadata: tuple[Any, ...]) -> Iterator[str]:
        origin = typing.get_origin(kind)
        if origin is typing.Annotated:
            inner, *extra = typing.get_args(kind)
            extra = [  # Field(...) inside Annotated keeps its constraints in its metadata
                part
                for item in extra
                for part in (item.metadata if isinstance(item, FieldInfo) else [item])
            ]
            yield from visit(inner, where, (*metadata, *extra))
        elif origin in _UNIONS:
            for option in typing.get_args(kind):
                yield from visit(option, where, metadata)
        elif origin is not None:  # list[...], dict[...], tuple[...]: items have their own kind
            for argument in typing.get_args(kind):
                if argument is not Ellipsis:
                    yield from visit(argument, f"{where}[]", ())
        elif isinstance(kind, type) and issubclass(kind, BaseModel):
            if kind in seen:
                return
            seen.add(kind)
            for name, field in kind.model_fields.items():
                yield from visit(field.annotation, f"{kind.__name__}.{name}", tuple(field.metadata))
        elif kind in (int, float, bool):
            strict = any(isinstance(item, Strict) and item.strict for item in metadata)
            if not strict:
                yield f"{where}: {kind.__name__}"
        elif kind is str:
            checked = any(getattr(item, "func", None) in TEXT_CHECKS for item in metadata)
            patterns = {
                getattr(item, "pattern", None) for item in metadata if hasattr(item, "pattern")
            } - {None, _ANY_TEXT}
            if not checked and not patterns and where.rsplit(".", 1)[-1] not in IDENTIFIERS:
                yield f"{where}: str"

    return visit(annotation, where, metadata)


@pytest.mark.parametrize("service", SERVICES)
def test_every_body_number_and_boolean_is_strict(service: str) -> None:
    lax = set()
    for route in body_routes(build(service)):
        assert route.body_field is not None
        info = route.body_field.field_info
        for found in lax_fields(info.annotation, "body", tuple(info.metadata)):
            lax.add(f"{sorted(route.methods)[0]} {route.path} {found}")
    assert sorted(lax) == []


def test_the_walk_finds_lax_fields_in_lists_unions_and_nested_models() -> None:
    class Line(BaseModel):
        cents: int
        strict_cents: Int

    class Body(BaseModel):
        flag: bool | None = None
        ratio: Float
        lines: list[Line]
        years: list[int]
        ok: list[Bool]

    assert sorted(lax_fields(Body, "body")) == [
        "Body.flag: bool",
        "Body.years[]: int",
        "Line.cents: int",
    ]


@pytest.mark.parametrize(
    ("kind", "refused"),
    [
        (Int, [True, False, "1", 1.0, 1.5, None]),
        (Float, [True, "1.5", None]),
        (Bool, [1, 0, "true", "1", 1.0, None]),
    ],
)
def test_the_kinds_refuse_json_values_of_another_type(kind: Any, refused: list[Any]) -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(kind)
    for value in refused:
        with pytest.raises(ValidationError):
            adapter.validate_python(value)  # FastAPI validates the parsed document this way


def test_the_kinds_keep_their_openapi_types() -> None:
    assert TypeAdapter(Int).json_schema() == {"type": "integer"}
    assert TypeAdapter(Float).json_schema() == {"type": "number"}
    assert TypeAdapter(Bool).json_schema() == {"type": "boolean"}


# --- text people read ----------------------------------------------------------------------------

HIDDEN = [
    *"\u061c\u180e\u200b\u200c\u200d\u200e\u200f\ufeff",
    *(chr(code) for code in range(0x202A, 0x202F)),
    *(chr(code) for code in range(0x2060, 0x2065)),
    *(chr(code) for code in range(0x2066, 0x206A)),
    *(chr(code) for code in (*range(0x20), *range(0x7F, 0xA0)) if chr(code) not in "\t\n\r"),
]
_SHOWN = st.characters(
    codec="utf-8",
    exclude_categories=("Cc", "Cs"),
    exclude_characters="".join(HIDDEN),
)


@given(text=st.text(_SHOWN, max_size=40))
def test_text_that_shows_as_written_is_taken_as_is(text: str) -> None:
    assert TypeAdapter(Line).validate_python(text) == text
    assert TypeAdapter(Prose).validate_python(f"{text}\n\t{text}\r\n") == f"{text}\n\t{text}\r\n"


@given(
    before=st.text(_SHOWN, max_size=20),
    hidden=st.sampled_from(HIDDEN),
    after=st.text(_SHOWN, max_size=20),
)
def test_a_hidden_character_anywhere_is_refused_in_french(
    before: str, hidden: str, after: str
) -> None:
    for kind in (Line, Prose, LineOrNone, ProseOrNone):
        with pytest.raises(ValidationError) as refused:
            TypeAdapter(kind).validate_python(before + hidden + after)
        [error] = refused.value.errors()
        assert error["type"] == "string_hidden_character"
        assert f"U+{ord(hidden):04X}" in validation_message(error)
        assert "caractère invisible ou de contrôle" in validation_message(error)


@given(line=st.text(_SHOWN, max_size=10), separator=st.sampled_from(["\t", "\n", "\r"]))
def test_one_line_refuses_tab_and_newline(line: str, separator: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Line).validate_python(line + separator + line)


def test_lengths_stay_string_lengths_on_optional_text() -> None:
    class Body(BaseModel):
        name: LineOrNone = Field(default=None, max_length=3)

    with pytest.raises(ValidationError) as refused:
        Body.model_validate({"name": "abcd"})
    assert refused.value.errors()[0]["type"] == "string_too_long"
