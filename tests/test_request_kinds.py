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
from pydantic import BaseModel, Strict, TypeAdapter, ValidationError
from test_input_limits import SERVICES, build

from maillage.common.kinds import Bool, Float, Int

_UNIONS = (typing.Union, types.UnionType)


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
    """``"NewConvention.budget_cents: int"``, for each number or boolean not strict."""
    seen: set[type[BaseModel]] = set()

    def visit(kind: Any, where: str, metadata: tuple[Any, ...]) -> Iterator[str]:
        origin = typing.get_origin(kind)
        if origin is typing.Annotated:
            inner, *extra = typing.get_args(kind)
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
