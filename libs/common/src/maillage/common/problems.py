"""RFC 9457 problem documents: the one error format of every Maillage API.

Every error answers ``application/problem+json`` with ``type``, ``title``, ``status``, ``detail``
and a stable machine ``code``; validation errors add ``errors``, one entry per field with a JSON
pointer. Raise :class:`Problem` from a route for a domain error. ``title`` and ``detail`` are
French, for people; ``code`` is stable English, for programs (:mod:`maillage.common.messages`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from maillage.common.logging import get_logger
from maillage.common.messages import status_title, validation_message
from maillage.common.telemetry import record_failure

log = get_logger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"

# Stable codes for plain HTTP errors; domain errors bring their own.
_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


# The problem document in OpenAPI: ``document_problems`` gives it to every error response.
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An RFC 9457 problem document (application/problem+json).",
    "type": "object",
    "required": ["type", "title", "status", "code"],
    "properties": {
        "type": {"type": "string", "description": "urn:maillage:problem:<code>"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "code": {"type": "string", "description": "Stable machine-readable code"},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "The request path"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "Validation errors, one per field",
            "items": {
                "type": "object",
                "required": ["in", "pointer", "detail", "type"],
                "properties": {
                    "in": {"type": "string"},
                    "pointer": {"type": "string", "description": "JSON pointer to the field"},
                    "detail": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}
_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def document_problems(openapi: dict[str, Any]) -> dict[str, Any]:
    """Complete an OpenAPI document with the errors every operation may answer, in place.

    An operation that takes a bearer token may answer 401 (with ``WWW-Authenticate``); one that
    takes a request body may answer 400 (unparsable) and 413 (too large); and every 4xx/5xx
    response a route declares without content is a problem document.
    """
    openapi.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for path_item in openapi.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            if operation.get("security"):
                responses.setdefault(
                    "401",
                    {
                        "description": "No bearer token, or not a valid one",
                        "headers": {
                            "WWW-Authenticate": {"required": True, "schema": {"type": "string"}}
                        },
                    },
                )
            if "requestBody" in operation:
                responses.setdefault(
                    "400",
                    {
                        "description": "The request body is not JSON (line and column in "
                        "`detail`) or is nested too deeply"
                    },
                )
                responses.setdefault("413", {"description": "The request body is too large"})
                if "application/json" in operation["requestBody"].get("content", {}):
                    responses.setdefault(
                        "415", {"description": "The request body is not application/json"}
                    )
            for status, response in responses.items():
                if status[:1] in ("4", "5") and "content" not in response:
                    response["content"] = {
                        PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
                    }
    return openapi


def code_for_status(status: int) -> str:
    return _CODES.get(status, HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_"))


_MEMBERS = frozenset({"type", "title", "status", "code", "detail", "instance", "request_id"})


class Problem(Exception):
    """A domain error that becomes a problem document.

    ``raise Problem(409, "partner_exists", "Partenaire déjà inscrit", detail="…")``: the title
    and detail in French, the code in stable English.
    """

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        *,
        detail: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title)
        clash = _MEMBERS.intersection(extensions)
        if clash:
            raise ValueError(f"problem extensions may not redefine {', '.join(sorted(clash))}")
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})
        self.extensions = extensions


def problem_response(
    request: Request,
    status: int,
    code: str,
    title: str,
    *,
    detail: str | None = None,
    headers: Mapping[str, str] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"urn:maillage:problem:{code}",
        "title": title,
        "status": status,
        "code": code,
    }
    if detail:
        body["detail"] = detail
    body["instance"] = request.url.path
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    body.update(extensions or {})
    all_headers = dict(headers or {})
    if request_id:
        all_headers.setdefault("X-Request-ID", request_id)
    return JSONResponse(
        body, status_code=status, headers=all_headers, media_type=PROBLEM_MEDIA_TYPE
    )


def _pointer(loc: Sequence[int | str]) -> tuple[str, str]:
    """``("body", "contacts", 0, "email")`` → ``("body", "#/contacts/0/email")``."""
    where, *path = loc or ("body",)
    escaped = [str(part).replace("~", "~0").replace("/", "~1") for part in path]
    return str(where), "#/" + "/".join(escaped)


async def handle_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(
        request,
        exc.status,
        exc.code,
        exc.title,
        detail=exc.detail,
        headers=exc.headers,
        extensions=exc.extensions,
    )


async def handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":  # the body is not JSON: 400, line and column
            return _malformed_json(request, exc.body, error)
        where, pointer = _pointer(error.get("loc", ()))
        errors.append(
            {
                "in": where,
                "pointer": pointer,
                "detail": validation_message(error),
                "type": error["type"],
            }
        )
    count = len(errors)
    return problem_response(
        request,
        422,
        "validation_failed",
        "Requête non valide",
        detail=f"{count} champ{'s' if count != 1 else ''} non valide{'s' if count != 1 else ''}.",
        extensions={"errors": errors},
    )


# Python's json messages, for people (the line and column say where).
_JSON_REASONS = {
    "Expecting value": "une valeur était attendue",
    "Expecting property name enclosed in double quotes": "un nom de propriété entre guillemets "
    "doubles était attendu",
    "Expecting ':' delimiter": "« : » était attendu",
    "Expecting ',' delimiter": "« , » était attendu",
    "Extra data": "du texte suit le document",
    "Unterminated string starting at": "une chaîne n'est pas fermée",
    "Invalid control character at": "caractère de contrôle dans une chaîne",
    "Invalid \\escape": "séquence d'échappement non valide",
    "Invalid \\uXXXX escape": "séquence \\uXXXX non valide",
}


def _why(error: Mapping[str, Any]) -> str:
    reason = (error.get("ctx") or {}).get("error", "")
    return _JSON_REASONS.get(reason, "syntaxe non valide")


def _malformed_json(request: Request, document: Any, error: Mapping[str, Any]) -> JSONResponse:
    """400 with the line and column of the fault (FastAPI's error gives a character offset)."""
    loc = error.get("loc", ())
    position = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else 0
    text = document if isinstance(document, str) else ""
    line = text.count("\n", 0, position) + 1
    column = position - text.rfind("\n", 0, position)
    return problem_response(
        request,
        400,
        "malformed_json",
        "JSON mal formé",
        detail=f"JSON mal formé, ligne {line}, colonne {column} : {_why(error)}.",
        extensions={"line": line, "column": column},
    )


# The English details Starlette and FastAPI raise themselves, in French.
_FRAMEWORK_DETAILS = {
    "There was an error parsing the body": "Le corps de la requête ne peut pas être lu.",
}


async def handle_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    phrase = HTTPStatus(status).phrase
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else None
    detail = _FRAMEWORK_DETAILS.get(detail, detail) if detail else None
    return problem_response(
        request,
        status,
        code_for_status(status),
        status_title(status),
        detail=detail,
        headers=exc.headers,
    )


async def handle_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # The traceback goes to the logs, joined to the trace; the client gets a request id only.
    log.error("unhandled error", exc_info=exc, path=request.url.path)
    record_failure("unhandled error", exc, attributes={"url.path": request.url.path})
    return problem_response(
        request,
        500,
        "internal_error",
        status_title(500),
        detail="Une erreur inattendue s'est produite ; donnez l'identifiant de la requête "
        "(request_id) aux opérateurs.",
    )
