# syntax=docker/dockerfile:1
# Chimera: one image for every role (`chimera-worker --role <role>`), the gateway and the local venue.
# Stage 1 builds a virtualenv with the package and its dependencies; stage 2 copies only that venv
# into a slim image and runs as an unprivileged user (uid 10001), read-only root filesystem friendly.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first (pyproject only) so a source change does not re-download them.
COPY pyproject.toml README.md ./
RUN mkdir chimera && touch chimera/__init__.py \
    && pip install --no-cache-dir . \
    && pip uninstall --yes chimera
COPY chimera ./chimera
RUN pip install --no-cache-dir --no-deps . \
    && python -m compileall -q /opt/venv/lib

FROM python:3.11-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="chimera" \
      org.opencontainers.image.description="Chimera trading system: Redis-Streams workers, gateway, local venue"
RUN groupadd --system --gid 10001 chimera \
    && useradd --system --uid 10001 --gid chimera --home-dir /app --shell /usr/sbin/nologin chimera \
    && mkdir -p /app /data \
    && chown chimera:chimera /app /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CHIMERA_LOG_JSON=1 \
    CHIMERA_METRICS_HOST=0.0.0.0 \
    CHIMERA_METRICS_PORT=9100
WORKDIR /app
USER 10001:10001
# 9100: each worker's /metrics, /health, /ready; 8000: the gateway; 8765: the local venue.
EXPOSE 9100 8000 8765
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CHIMERA_HEALTH_PORT', os.environ['CHIMERA_METRICS_PORT']) + '/health', timeout=2)"]
CMD ["chimera-worker", "--help"]
