"""JSON request bodies, checked before a route's model sees them (issue 15 §3, issue 16 §4).

Every app built by ``create_app`` runs :func:`check_json_body` as an app-wide dependency. FastAPI
has read and parsed the body by then, and runs dependencies before it validates the body, so on
every route that takes a JSON body:

1. a body in another media type (a form, ``text/plain``) answers 415 ``unsupported_media_type``
   naming ``application/json`` (a body without ``Content-Type`` is read as JSON, as FastAPI
   does);
2. a document nested deeper than :data:`MAX_DEPTH` answers 400 ``json_too_deep``;
3. text holding a lone surrogate (``"\\ud800"``, which cannot be encoded, not even in the 422
   that names it) or a NUL character (which PostgreSQL cannot store), in a value or a key,
   answers 422 ``validation_failed`` with a pointer to each such field.

A body that is not JSON never gets here: FastAPI's parse error becomes a 400 ``malformed_json``
with the line and column (``problems.handle_validation_error``), and a document nested so deep
that Python's parser gives up is a 400 too. Routes without a body model (``/oauth/token`` reads
its form itself) are left alone.
"""

from __future__ import annotations

import email.message
import re
from collections.abc import Iterator
from typing import Any

from fastapi import Request

from maillage.common.messages import status_title
from maillage.common.problems import Problem

MAX_DEPTH = 32
"""Arrays and objects within one another; Maillage's deepest body needs 3."""

JSON_MEDIA_TYPE = "application/json"
_FORBIDDEN_TEXT = re.compile("[\x00\ud800-\udfff]")


async def check_json_body(request: Request) -> None:
    """The app-wide dependency: see the module docstring."""
    route = request.scope.get("route")
    if getattr(route, "body_field", None) is None:
        return
    body = await request.body()  # FastAPI has read it already: this is its copy
    if not body:
        return
    media_type = request.headers.get("content-type")
    if media_type is not None and not is_json_media_type(media_type):
        raise Problem(
            415,
            "unsupported_media_type",
            status_title(415),
            detail=f"Envoyez le corps en JSON (Content-Type: {JSON_MEDIA_TYPE}).",
            accepted=[JSON_MEDIA_TYPE],
        )
    check_text(await request.json())  # parsed already: Starlette keeps the document


def is_json_media_type(value: str) -> bool:
    """``application/json``, ``application/merge-patch+json``, parameters allowed."""
    message = email.message.Message()
    message["content-type"] = value
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def check_text(document: Any) -> None:
    """400 for a document nested deeper than :data:`MAX_DEPTH`; 422 for text with a lone
    surrogate or a NUL character, one error per field."""
    errors = list(_forbidden_text(document))
    if errors:
        count = len(errors)
        plural = "s" if count > 1 else ""
        raise Problem(
            422,
            "validation_failed",
            "Requête non valide",
            detail=f"{count} champ{plural} non valide{plural}.",
            errors=errors[:50],
        )


def _too_deep() -> Problem:
    return Problem(
        400,
        "json_too_deep",
        "JSON trop imbriqué",
        detail=f"Le corps imbrique plus de {MAX_DEPTH} tableaux ou objets.",
        max_depth=MAX_DEPTH,
    )


def _forbidden_text(document: Any) -> Iterator[dict[str, str]]:
    """A validation error per string (value or key) holding a lone surrogate or a NUL; 400
    when the document is nested deeper than :data:`MAX_DEPTH`. Iterative: no recursion."""
    stack: list[tuple[Any, tuple[str, ...], int]] = [(document, (), 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            found = _FORBIDDEN_TEXT.search(value)
            if found:
                yield _text_error(path, found.group())
        elif isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                raise _too_deep()
            if isinstance(value, dict):
                for key, item in value.items():
                    found = _FORBIDDEN_TEXT.search(key)
                    if found:
                        yield _text_error((*path, key), found.group())
                    stack.append((item, (*path, key), depth + 1))
            else:
                stack.extend(
                    (item, (*path, str(index)), depth + 1) for index, item in enumerate(value)
                )


def _text_error(path: tuple[str, ...], character: str) -> dict[str, str]:
    if character == "\x00":
        detail, kind = "Le texte contient un caractère NUL (U+0000).", "string_nul"
    else:
        detail = f"Le texte contient un demi-caractère UTF-16 isolé (U+{ord(character):04X})."
        kind = "string_lone_surrogate"
    return {"in": "body", "pointer": _pointer(path), "detail": detail, "type": kind}


def _pointer(path: tuple[str, ...]) -> str:
    """A JSON pointer that can be encoded even when a key holds a lone surrogate."""
    parts = (part.replace("~", "~0").replace("/", "~1") for part in path)
    pointer = "#/" + "/".join(parts)
    return _FORBIDDEN_TEXT.sub(lambda found: f"\\u{ord(found.group()):04x}", pointer)
