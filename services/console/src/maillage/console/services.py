"""The console's calls to the services' HTTP APIs, always with the signed-in staff member's own
bearer token: the console has no credentials of its own and owns no business data.

A service's refusal comes back as :class:`Refused`, carrying its RFC 9457 problem (French
``title`` and ``detail``) to show as it is; a service that does not answer becomes a 503-like
``Refused`` with a French message. The token is never logged nor put in a page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

SERVICES = ("registry", "cordees", "stages3e", "funding", "notifications")
TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Refused(Exception):
    """A service said no (or could not be reached): what to show the staff member."""

    status: int
    title: str
    detail: str
    code: str

    def __str__(self) -> str:
        return f"{self.title} : {self.detail}"


def _refusal(service: str, response: httpx.Response) -> Refused:
    """The problem document of a 4xx/5xx answer, or a generic French message."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("title"), str):
        return Refused(
            response.status_code,
            body["title"],
            str(body.get("detail") or ""),
            str(body.get("code") or body.get("error") or "problem"),
        )
    if isinstance(body, dict) and isinstance(body.get("error"), str):  # RFC 6749 (token route)
        return Refused(response.status_code, "Refusé", "", body["error"])
    return Refused(
        response.status_code,
        "Erreur du service",
        f"Le service {service} a répondu {response.status_code}.",
        "service_error",
    )


class ServiceClients:
    """One pooled HTTP client per service, on the base URLs of the settings."""

    def __init__(
        self, base_urls: dict[str, str], transport: httpx.AsyncBaseTransport | None = None
    ):
        self.base_urls = base_urls
        self._clients = {
            name: httpx.AsyncClient(base_url=url, timeout=TIMEOUT_SECONDS, transport=transport)
            for name, url in base_urls.items()
        }

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()

    async def call(
        self,
        service: str,
        method: str,
        path: str,
        *,
        token: str | None,
        json: Any = None,
        params: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """The service's 2xx answer; :class:`Refused` for anything else. The trace store (Jaeger)
        never receives the staff member's token."""
        headers = dict(headers or {})
        if token and service != "traces":
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = await self._clients[service].request(
                method, path, headers=headers, json=json, params=params, data=data
            )
        except httpx.HTTPError as error:
            raise Refused(
                503,
                "Service injoignable",
                f"Le service {service} ne répond pas ({type(error).__name__}).",
                "service_unreachable",
            ) from error
        if response.status_code >= 400:
            raise _refusal(service, response)
        return response

    async def json(
        self, service: str, method: str, path: str, *, token: str | None, **options: Any
    ) -> Any:
        return (await self.call(service, method, path, token=token, **options)).json()

    async def password_grant(self, username: str, password: str) -> dict[str, Any]:
        """The registry's access token for a staff member (``{"access_token", "expires_in"}``);
        :class:`Refused` with a French message for wrong credentials or a throttled account."""
        try:
            return dict(
                await self.json(
                    "registry",
                    "POST",
                    "/oauth/token",
                    token=None,
                    data={"grant_type": "password", "username": username, "password": password},
                )
            )
        except Refused as refused:
            if refused.code == "invalid_grant" or refused.status in (400, 401):
                raise Refused(
                    401,
                    "Identifiants refusés",
                    "Adresse ou mot de passe incorrect.",
                    "invalid_credentials",
                ) from refused
            raise
