"""No log line, in either format, holds request bodies, headers, tokens or level-1 data, and
tracebacks carry no local variables (issue 16 §6).

A run provokes errors the way the attack did: an unexpected error (500) in a handler whose
locals hold the request's contacts and Authorization header, an invalid body, a malformed one,
a forged token, a refused media type. The service's whole stderr is then scanned, in the
development (console) format and in JSON.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from maillage.common.auth import CurrentCaller
from maillage.common.http import create_app
from maillage.common.logging import get_logger, scrub
from maillage.common.settings import ServiceSettings

EMAIL = "camille.martin@ac-creteil.fr"
PHONE = "06 12 34 56 78"
NAME = "Camille Martin-Zébulon"  # level 1: appears in the body only
TOKEN = "eyJhbGciOiJFZERTQSIsImtpZCI6IjIwMjYifQ.eyJzdWIiOiJmb3JnZWQifQ.c2lnbmF0dXJl"
SECRET = "mcs_2Qf8x-very-secret-client-secret"


class Contact(BaseModel):
    name: str = Field(max_length=200)
    email: str = Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    phone: str = Field(max_length=40)


class Registration(BaseModel):
    legal_name: str = Field(max_length=200)
    contacts: list[Contact] = Field(max_length=10)


router = APIRouter()


@router.post("/partners")
async def register(registration: Registration, request: Request) -> dict[str, Any]:
    contacts = [contact.model_dump() for contact in registration.contacts]  # a local, as in a route
    authorization = request.headers.get("authorization")
    get_logger("test").info("registering", contact=contacts[0]["email"])
    raise RuntimeError(f"cannot register {contacts[0]['email']} with {authorization}")


@router.get("/mine")
async def mine(caller: CurrentCaller) -> dict[str, str]:
    return {"subject": caller.subject}


def body(email: str = EMAIL) -> dict[str, Any]:
    return {
        "legal_name": "Lycée",
        "contacts": [{"name": NAME, "email": email, "phone": PHONE}],
    }


def hygiene_transport(log_format: Any) -> httpx.ASGITransport:
    """The test app, logging at DEBUG in ``log_format``, behind an in-process transport."""
    settings = ServiceSettings(
        service_name="hygiene",
        database_url="postgresql://maillage:s3cret@127.0.0.1/hygiene",
        log_format=log_format,
        log_level="DEBUG",
    )
    app = create_app(settings, title="t", description="t", routers=[router])
    return httpx.ASGITransport(app=app, raise_app_exceptions=False)


@pytest.mark.parametrize("log_format", ["console", "json"])
async def test_an_erring_run_logs_no_body_header_token_or_contact(
    capsys: pytest.CaptureFixture[str], log_format: Any
) -> None:
    transport = hygiene_transport(log_format)
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Api-Key": SECRET}
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        failed = await client.post("/partners", json=body(), headers=headers)
        assert failed.status_code == 500
        invalid = await client.post("/partners", json=body(email=f"{EMAIL} x"), headers=headers)
        assert invalid.status_code == 422
        malformed = await client.post(
            "/partners",
            content=json.dumps(body())[:-3].encode(),
            headers={**headers, "content-type": "application/json"},
        )
        assert malformed.status_code == 400
        form = await client.post(
            "/partners",
            content=f"email={EMAIL}".encode(),
            headers={**headers, "content-type": "application/x-www-form-urlencoded"},
        )
        assert form.status_code == 415
        forged = await client.get("/mine", headers=headers)
        assert forged.status_code == 401
    output = capsys.readouterr().err
    assert "unhandled error" in output
    assert "Traceback" in output  # the traceback is there, as plain text
    assert "RuntimeError: cannot register *** with Bearer ***" in output
    for leak in (EMAIL, "camille.martin", PHONE, NAME, TOKEN, SECRET, "s3cret"):
        assert leak not in output, f"{leak!r} in the {log_format} logs"
    # No local variables: rich and better-exceptions print them as `name = value`.
    for local in ("contacts = ", "authorization = ", "registration = ", "request = "):
        assert local not in output, f"{local!r} in the {log_format} logs"


def test_scrub_keeps_what_operators_need() -> None:
    kept = (
        "siret 73282932000074 uai 0940001A at 2026-11-29T18:34:20.552336Z offset 1234567890123 "
        "trace 7118e32c04136625bc4fb17f9889adeb partner 4f1a9c2e-2b1d-4e7b-9a2f-0c9d8e7f6a5b"
    )
    assert scrub(kept) == kept
    assert scrub(f"to {EMAIL}, {PHONE}, +33 6 12 34 56 78, Basic bWNs, whsec_MfKQ9r8=") == (
        "to ***, ***, ***, Basic ***, ***"
    )


@pytest.mark.parametrize("log_format", ["console", "json"])
async def test_control_characters_of_a_url_never_reach_the_logs_raw(
    capsys: pytest.CaptureFixture[str], log_format: Any
) -> None:
    """A request to ``/partners/y%1b[31mRED%00…`` logs its path: terminal escapes, NUL, DEL and
    C1 controls are written escaped in the readable format, as JSON escapes in the JSON one."""
    transport = hygiene_transport(log_format)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        answer = await client.get("/partners/y%1b[31mRED%00%7f%c2%85%0Aforged%09x")
        assert answer.status_code in (404, 405)
    output = capsys.readouterr().err
    raw = "".join(c for c in output if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F)
    assert raw == "", f"raw controls in the {log_format} logs: {raw!r}"
    path = "/partners/y\x1b[31mRED\x00\x7f\x85\nforged\tx"
    if log_format == "json":
        lines = [json.loads(line) for line in output.splitlines()]
        assert path in [line.get("path") for line in lines]
    else:
        assert "/partners/y\\x1b[31mRED\\x00\\x7f\\x85\\nforged\\tx" in output
        assert not any(line.startswith("forged") for line in output.splitlines())
