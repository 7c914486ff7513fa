"""``python -m maillage.common.migrate``: apply one service's migrations, then exit.

The Kubernetes migration Job (deploy/k8s) runs it in the service's own image before a rollout,
so the Deployments start with ``<SERVICE>_MIGRATE_ON_START=false``. The service is the image's
``MAILLAGE_SERVICE`` (set by the Dockerfile) and its database ``<SERVICE>_DATABASE_URL``; the
migrations are the folder the service's ``app`` module names ``MIGRATIONS``. Replicas or Jobs
running it at once serialise on the migration advisory lock (docs/architecture.md, decision 5).
Exit status 0 when the database is up to date, 1 with the reason on stderr otherwise.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from pathlib import Path

from maillage.common.db import migrate_service

SERVICES = ("registry", "cordees", "stages3e", "funding", "notifications")


def migrations_of(service: str) -> Path:
    """The service's migration folder (its ``app.MIGRATIONS``), imported by name: the chassis
    knows no service statically."""
    if service not in SERVICES:
        raise ValueError(f"MAILLAGE_SERVICE must be one of {', '.join(SERVICES)}, not {service!r}")
    folder: Path = importlib.import_module(f"maillage.{service}.app").MIGRATIONS
    return folder


def main(environ: dict[str, str] | None = None) -> int:
    environ = dict(os.environ) if environ is None else environ
    service = environ.get("MAILLAGE_SERVICE", "")
    dsn = environ.get(f"{service.upper()}_DATABASE_URL", "")
    try:
        folder = migrations_of(service)
        if not dsn:
            raise ValueError(f"{service.upper()}_DATABASE_URL is not set")
        applied = asyncio.run(migrate_service(dsn, folder))
    except Exception as exc:
        print(f"migrations of {service or '?'} failed: {exc}", file=sys.stderr)
        return 1
    print(f"{service}: {len(applied)} migration(s) applied, database up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
