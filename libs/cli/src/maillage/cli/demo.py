"""Demo data for ``maillage dev --demo``, loaded through the services' public HTTP APIs.

Each service adds a step here as it gains an API (the registry registers the demo partners and
staff accounts first; the others build on them). A step receives the base URL of every service
and returns the lines to show the developer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

DemoStep = Callable[[dict[str, str]], Awaitable[list[str]]]

STEPS: list[DemoStep] = []


async def load(base_urls: dict[str, str]) -> list[str]:
    if not STEPS:
        return ["no service provides demo data yet"]
    lines: list[str] = []
    for step in STEPS:
        lines.extend(await step(base_urls))
    return lines
