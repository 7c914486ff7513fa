"""Every string and list a client sends has a documented maximum, in every service (issue 16 §1).

The attack that stalled the registry's relay: an anonymous registration whose
``cites_educatives`` held twenty strings of 52,419 characters (1 MiB). Each input of every
OpenAPI document must now say its maximum (``maillage.common.limits.unbounded_inputs``), and
FastAPI answers 422 beyond it.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from maillage.common.limits import unbounded_inputs

SERVICES = ("registry", "cordees", "stages3e", "funding", "notifications")


def build(service: str) -> FastAPI:
    module = importlib.import_module(f"maillage.{service}.app")
    settings = getattr(module, f"{service.capitalize()}Settings")
    app: FastAPI = module.create(
        settings(database_url="postgresql://unused@127.0.0.1/unused", environment="test")
    )
    return app


@pytest.mark.parametrize("service", SERVICES)
def test_every_input_has_a_documented_maximum(service: str) -> None:
    assert unbounded_inputs(build(service).openapi()) == []


def test_the_checker_names_what_has_no_maximum() -> None:
    document: dict[str, Any] = {
        "paths": {
            "/things": {
                "post": {
                    "parameters": [
                        {"in": "query", "name": "q", "schema": {"type": "string"}},
                        {
                            "in": "query",
                            "name": "id",
                            "schema": {"format": "uuid", "type": "string"},
                        },
                    ],
                    "requestBody": {
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}
                        }
                    },
                }
            }
        },
        "components": {
            "schemas": {
                "Thing": {
                    "type": "object",
                    "properties": {
                        "tags": {"type": "array", "items": {"type": "string", "maxLength": 9}},
                        "names": {
                            "type": "array",
                            "maxItems": 3,
                            "items": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                        },
                        "kind": {"type": "string", "enum": ["a", "b"]},
                        "extra": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "child": {"$ref": "#/components/schemas/Thing"},
                    },
                }
            }
        },
    }
    assert unbounded_inputs(document) == [
        "POST /things query q: string without maxLength",
        "POST /things body (application/json) #/tags: array without maxItems",
        "POST /things body (application/json) #/names/0: string without maxLength",
        "POST /things body (application/json) #/extra: object of free keys without maxProperties",
    ]


def test_the_registration_that_stalled_the_relay_is_refused() -> None:
    from maillage.registry.api import Registration

    attack = {
        "kind": "association",
        "legal_name": "Association",
        "rna": "W751234567",
        "contacts": [{"name": "A", "role": "B", "email": "a@example.org"}],
        "cites_educatives": ["x" * 52_419] * 20,
    }
    with pytest.raises(ValidationError) as refused:
        Registration.model_validate(attack)
    assert {error["type"] for error in refused.value.errors()} == {"string_too_long"}
