"""Every string and list a client sends has a documented maximum (issue 16 §1, decision 35).

:func:`unbounded_inputs` reads a service's OpenAPI document and names every input without one:
a string parameter or body field without ``maxLength`` (unless an enum, a UUID or a date says
its length), an array without ``maxItems``, an object of free keys without ``maxProperties``. A
test runs it on every service, so a new field cannot come without its limit; FastAPI answers
422 beyond a limit the model declares.

The common sizes, to reuse rather than invent (characters):
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

NAME = 200
"""A person's or an organisation's name, a title, a place."""
SHORT_TEXT = 500
"""A reason, a role, a one-line description."""
LONG_TEXT = 5_000
"""A free description (an offer's presentation)."""
CODE = 64
"""An identifier in the field's own format (SIRET, UAI, commune code, a reference)."""
EMAIL = 254
"""RFC 5321's longest path."""
URL = 2_000
"""What browsers and proxies carry everywhere."""
SECRET = 512
"""A client secret, a password, a token given back."""
LIST = 100
"""Items of a list sent in one request (contacts, thematics, niveaux)."""

_SELF_BOUNDED_FORMATS = frozenset({"uuid", "date", "date-time", "time", "duration"})
_METHODS = frozenset({"get", "put", "post", "delete", "patch"})


def unbounded_inputs(openapi: dict[str, Any]) -> list[str]:
    """``"POST /partners body#/contacts/0/email: string without maxLength"``, one per input."""
    found: list[str] = []
    schemas = openapi.get("components", {}).get("schemas", {})
    for path, item in openapi.get("paths", {}).items():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            where = f"{method.upper()} {path}"
            for parameter in operation.get("parameters", []):
                name = f"{parameter['in']} {parameter['name']}"
                found += (
                    f"{where} {name}{problem}"
                    for problem in _unbounded(parameter.get("schema", {}), "", schemas, set())
                )
            for media, content in operation.get("requestBody", {}).get("content", {}).items():
                found += (
                    f"{where} body ({media}) #{problem}"
                    for problem in _unbounded(content.get("schema", {}), "", schemas, set())
                )
    return found


def _unbounded(
    schema: dict[str, Any], pointer: str, schemas: dict[str, Any], seen: set[str]
) -> Iterator[str]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen:  # a recursive model is walked once
            return
        yield from _unbounded(schemas.get(name, {}), pointer, schemas, seen | {name})
        return
    for combined in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(combined, []):
            yield from _unbounded(option, pointer, schemas, seen)
    kind = schema.get("type")
    if kind == "string" and "enum" not in schema and "const" not in schema:
        if "maxLength" not in schema and schema.get("format") not in _SELF_BOUNDED_FORMATS:
            yield f"{pointer}: string without maxLength"
    elif kind == "array":
        if "maxItems" not in schema:
            yield f"{pointer}: array without maxItems"
        yield from _unbounded(schema.get("items", {}), f"{pointer}/0", schemas, seen)
    elif kind == "object" or "properties" in schema:
        for name, field in schema.get("properties", {}).items():
            yield from _unbounded(field, f"{pointer}/{name}", schemas, seen)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            if "maxProperties" not in schema:
                yield f"{pointer}: object of free keys without maxProperties"
            yield from _unbounded(extra, f"{pointer}/*", schemas, seen)
