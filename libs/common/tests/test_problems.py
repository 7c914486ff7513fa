"""Problem documents (RFC 9457) from an app built by ``create_app``: every error, one format."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
import uvicorn
from fastapi import APIRouter, FastAPI, Query
from pydantic import BaseModel, Field

from maillage.cli.embedded import free_port
from maillage.common.http import create_app
from maillage.common.problems import Problem, _pointer, code_for_status
from maillage.common.settings import ServiceSettings

LIMIT = 1024
PROBLEM_KEYS = {"type", "title", "status", "code", "instance", "request_id"}
UUID_HEX = re.compile(r"^[0-9a-f]{32}$")


class Contact(BaseModel):
    name: str
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")


class PartnerIn(BaseModel):
    name: str = Field(min_length=1)
    contacts: list[Contact] = Field(default_factory=list)


def build_router() -> APIRouter:
    router = APIRouter()

    @router.get("/partners/{partner_id}/conflict")
    async def conflict(partner_id: str) -> None:
        raise Problem(
            409,
            "partner_exists",
            "Partner already registered",
            detail=f"A partner with SIRET {partner_id} is already registered.",
            partner_id=partner_id,
        )

    @router.post("/partners", status_code=201)
    async def create_partner(partner: PartnerIn) -> dict[str, Any]:
        return {"name": partner.name, "contacts": len(partner.contacts)}

    @router.get("/search")
    async def search(limit: Annotated[int, Query(ge=1, le=100)] = 10) -> dict[str, int]:
        return {"limit": limit}

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    return router


@pytest.fixture(scope="module")
def app() -> FastAPI:
    settings = ServiceSettings(
        service_name="test",
        database_url="postgresql://x@127.0.0.1/x",
        max_request_bytes=LIMIT,
    )
    return create_app(
        settings, title="problems test", description="problems test", routers=[build_router()]
    )


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def assert_problem(response: httpx.Response, status: int, code: str, path: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body.keys() >= PROBLEM_KEYS
    assert body["type"] == f"urn:maillage:problem:{code}"
    assert body["status"] == status
    assert body["code"] == code
    assert isinstance(body["title"], str)
    assert body["title"]
    assert body["instance"] == path
    assert body["request_id"] == response.headers["x-request-id"]
    return body


# --- plain HTTP errors -------------------------------------------------------------------------


async def test_unknown_path_is_404(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/nowhere"), 404, "not_found", "/nowhere")
    assert body["title"] == "Introuvable"  # French for people; the code for programs


async def test_wrong_method_is_405_and_keeps_allow(client: httpx.AsyncClient) -> None:
    response = await client.get("/partners")
    body = assert_problem(response, 405, "method_not_allowed", "/partners")
    assert body["title"] == "Méthode non permise"
    assert response.headers["allow"] == "POST"


async def test_success_is_plain_json(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/partners", json={"name": "Asso", "contacts": [{"name": "Ana", "email": "a@b.fr"}]}
    )
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"name": "Asso", "contacts": 1}
    assert UUID_HEX.match(response.headers["x-request-id"])


# --- domain errors -----------------------------------------------------------------------------


async def test_domain_problem_keeps_code_detail_and_extensions(client: httpx.AsyncClient) -> None:
    path = "/partners/12345678900011/conflict"
    body = assert_problem(await client.get(path), 409, "partner_exists", path)
    assert body["title"] == "Partner already registered"
    assert body["detail"] == "A partner with SIRET 12345678900011 is already registered."
    assert body["partner_id"] == "12345678900011"


# --- validation --------------------------------------------------------------------------------


async def test_invalid_body_is_422_with_pointers(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/partners",
        json={
            "name": "Asso",
            "contacts": [{"name": "Ana", "email": "not-an-email"}, {"email": "b@c.fr"}],
        },
    )
    body = assert_problem(response, 422, "validation_failed", "/partners")
    assert body["detail"] == "2 champs non valides."
    errors = body["errors"]
    assert {tuple(error) for error in errors} == {("in", "pointer", "detail", "type")}
    by_pointer = {error["pointer"]: error for error in errors}
    assert set(by_pointer) == {"#/contacts/0/email", "#/contacts/1/name"}
    email = by_pointer["#/contacts/0/email"]
    assert email["in"] == "body"
    assert email["type"] == "string_pattern_mismatch"
    assert email["detail"].startswith("Le format n'est pas celui attendu")
    assert by_pointer["#/contacts/1/name"]["type"] == "missing"
    assert "not-an-email" not in response.text  # the input is not echoed back


async def test_missing_body_field_points_at_it(client: httpx.AsyncClient) -> None:
    response = await client.post("/partners", json={"contacts": []})
    body = assert_problem(response, 422, "validation_failed", "/partners")
    assert body["detail"] == "1 champ non valide."
    assert body["errors"] == [
        {
            "in": "body",
            "pointer": "#/name",
            "detail": "Ce champ est obligatoire.",
            "type": "missing",
        }
    ]


@pytest.mark.parametrize(
    ("body", "line", "column"),
    [
        (b'{"name": ', 1, 10),
        (b'{\n  "name": "x",\n  "contacts": [}\n', 3, 16),
        (b"{'name': 'x'}", 1, 2),
        (b'{"name": "x"} trailing', 1, 15),
    ],
)
async def test_malformed_json_is_400_with_line_and_column(
    client: httpx.AsyncClient, body: bytes, line: int, column: int
) -> None:
    """Issue 15 §3: not a 422 whose pointer is a character offset (#/23)."""
    response = await client.post(
        "/partners", content=body, headers={"content-type": "application/json"}
    )
    problem = assert_problem(response, 400, "malformed_json", "/partners")
    assert (problem["line"], problem["column"]) == (line, column)
    assert f"ligne {line}, colonne {column} : " in problem["detail"]
    assert "syntaxe non valide" not in problem["detail"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"name=x"),
        ("text/plain", b'{"name": "x"}'),
        ("multipart/form-data; boundary=x", b"--x--"),
    ],
)
async def test_a_body_in_another_media_type_is_415(
    client: httpx.AsyncClient, content_type: str, body: bytes
) -> None:
    response = await client.post("/partners", content=body, headers={"content-type": content_type})
    problem = assert_problem(response, 415, "unsupported_media_type", "/partners")
    assert "application/json" in problem["detail"]
    assert problem["accepted"] == ["application/json"]


async def test_json_media_types_with_parameters_and_suffixes_are_read(
    client: httpx.AsyncClient,
) -> None:
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = await client.post(
            "/partners", content=b'{"name": "x"}', headers={"content-type": content_type}
        )
        assert response.status_code == 201, response.text
    bare = await client.post("/partners", content=b'{"name": "x"}', headers={"content-type": ""})
    assert bare.status_code in (201, 415)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"name": "x", "contacts": ' + b"[" * 33 + b"]" * 33 + b"}", "json_too_deep"),
        (b"[" * 1000, "bad_request"),  # Python's parser gives up before us: a 400 all the same
    ],
)
async def test_deeply_nested_json_is_400(client: httpx.AsyncClient, body: bytes, code: str) -> None:
    response = await client.post("/partners", content=body, headers=JSON)
    assert_problem(response, 400, code, "/partners")


@pytest.mark.parametrize(
    ("body", "pointer", "kind"),
    [
        (b'{"name": "\\ud800"}', "#/name", "string_lone_surrogate"),
        (
            b'{"name": "x", "contacts": [{"name": "\\udfff", "email": "a@b.fr"}]}',
            "#/contacts/0/name",
            "string_lone_surrogate",
        ),
        (b'{"name": "a\\u0000b"}', "#/name", "string_nul"),
        (b'{"name": "x", "\\ud83d": 1}', "#/\\ud83d", "string_lone_surrogate"),
    ],
)
async def test_lone_surrogates_and_nul_are_422_that_can_be_encoded(
    client: httpx.AsyncClient, body: bytes, pointer: str, kind: str
) -> None:
    response = await client.post("/partners", content=body, headers=JSON)
    problem = assert_problem(response, 422, "validation_failed", "/partners")
    assert [(e["pointer"], e["type"]) for e in problem["errors"]] == [(pointer, kind)]


async def test_a_pair_of_surrogates_is_one_character(client: httpx.AsyncClient) -> None:
    response = await client.post("/partners", content=b'{"name": "\\ud83d\\ude00"}', headers=JSON)
    assert response.status_code == 201
    assert response.json()["name"] == "\U0001f600"


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("value", "error_type"),
    [("abc", "int_parsing"), ("0", "greater_than_equal"), ("1000", "less_than_equal")],
)
async def test_invalid_query_parameter_is_422(
    client: httpx.AsyncClient, value: str, error_type: str
) -> None:
    response = await client.get("/search", params={"limit": value})
    body = assert_problem(response, 422, "validation_failed", "/search")
    assert body["errors"] == [
        {
            "in": "query",
            "pointer": "#/limit",
            "detail": body["errors"][0]["detail"],
            "type": error_type,
        }
    ]
    assert body["errors"][0]["detail"]


def test_pointer_escapes_json_pointer_characters() -> None:
    assert _pointer(("body", "a/b", "c~d", 0)) == ("body", "#/a~1b/c~0d/0")
    assert _pointer(("query", "limit")) == ("query", "#/limit")
    assert _pointer(()) == ("body", "#/")


def test_codes_for_statuses() -> None:
    assert code_for_status(404) == "not_found"
    assert code_for_status(413) == "payload_too_large"
    assert code_for_status(418) == "i'm_a_teapot"
    assert code_for_status(424) == "failed_dependency"


# --- body size limit ---------------------------------------------------------------------------


async def test_body_with_content_length_above_the_limit_is_413(client: httpx.AsyncClient) -> None:
    payload = b'{"name": "' + b"x" * (LIMIT + 10) + b'"}'
    response = await client.post(
        "/partners", content=payload, headers={"content-type": "application/json"}
    )
    assert response.request.headers["content-length"] == str(len(payload))
    body = assert_problem(response, 413, "payload_too_large", "/partners")
    assert str(LIMIT) in body["detail"]


async def test_chunked_body_above_the_limit_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(4):
            yield b"x" * 400
        yield b'"}'

    response = await client.post(
        "/partners", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    body = assert_problem(response, 413, "payload_too_large", "/partners")
    assert str(LIMIT) in body["detail"]


async def test_chunked_body_within_the_limit_passes(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        yield b"x" * 400
        yield b'", "contacts": []}'

    response = await client.post(
        "/partners", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 201, response.text
    assert response.json() == {"name": "x" * 400, "contacts": 0}


async def test_body_exactly_at_the_limit_passes(client: httpx.AsyncClient) -> None:
    prefix, suffix = b'{"name": "', b'"}'
    payload = prefix + b"x" * (LIMIT - len(prefix) - len(suffix)) + suffix
    assert len(payload) == LIMIT
    response = await client.post(
        "/partners", content=payload, headers={"content-type": "application/json"}
    )
    assert response.status_code == 201, response.text


# --- unexpected errors -------------------------------------------------------------------------


async def test_unexpected_error_is_500_without_internals(client: httpx.AsyncClient) -> None:
    response = await client.get("/boom", headers={"X-Request-ID": "trace-me-123"})
    body = assert_problem(response, 500, "internal_error", "/boom")
    assert body["request_id"] == "trace-me-123"
    for leak in ("secret internals", "Traceback", "RuntimeError", 'File "'):
        assert leak not in response.text
    assert set(body) == PROBLEM_KEYS | {"detail"}


async def test_a_500_keeps_the_keep_alive_connection(app: FastAPI) -> None:
    """Issue 16 §4: after each 500 the server used to drop the connection (the exception went
    on to uvicorn). A real uvicorn, one TCP connection, a 500 then another request on it."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        statuses = []
        for path in ("/boom", "/search", "/boom", "/search"):
            writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(re.search(rb"content-length: (\d+)", head.lower()).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            statuses.append(int(head.split()[1]))
            assert b"connection: close" not in head.lower()
        writer.close()
    finally:
        server.should_exit = True
        await serving
    assert statuses == [500, 200, 500, 200]


# --- request id --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_id", ["abc-123", "7f9c2ba4e88f827d616045507605853e", "svc.a:b_c-d", "x" * 128]
)
async def test_sane_request_id_is_echoed(client: httpx.AsyncClient, request_id: str) -> None:
    response = await client.get("/nowhere", headers={"X-Request-ID": request_id})
    assert response.headers["x-request-id"] == request_id
    assert response.json()["request_id"] == request_id
    success = await client.get("/search", headers={"X-Request-ID": request_id})
    assert success.status_code == 200
    assert success.headers["x-request-id"] == request_id


@pytest.mark.parametrize(
    "request_id", ["x" * 129, "a" * 500, "has spaces in it", "semi;colon", 'quote"d', ""]
)
async def test_insane_request_id_is_replaced(client: httpx.AsyncClient, request_id: str) -> None:
    response = await client.get("/nowhere", headers={"X-Request-ID": request_id})
    replaced = response.headers["x-request-id"]
    assert replaced != request_id
    assert UUID_HEX.match(replaced)
    assert response.json()["request_id"] == replaced
    assert response.headers.get_list("x-request-id") == [replaced]


async def test_each_request_gets_its_own_id(client: httpx.AsyncClient) -> None:
    first = await client.get("/search")
    second = await client.get("/search")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
