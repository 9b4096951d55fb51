# syntax=docker/dockerfile:1
# One image for the worker, the exporter and the API: `tidings worker myapp:app`,
# `tidings exporter --app myapp:app`, `tidings api --app myapp:app`. Build it from the
# repository root: `docker build -t tidings .` (CI does when a Docker daemon is there).
# Your own app goes in a thin image on top: FROM tidings, COPY myapp.py /app/.

ARG PYTHON_VERSION=3.11

# Build stage: compilers and pip's cache stay here; only the virtualenv moves on.
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/tidings \
    && /opt/tidings/bin/pip install --no-cache-dir ".[api,ledger,otel]"

# Runtime stage: the interpreter, the virtualenv and the example app; no compilers, no
# package caches, no root.
FROM python:${PYTHON_VERSION}-slim-bookworm
RUN groupadd --system --gid 10001 tidings \
    && useradd --system --uid 10001 --gid tidings --home-dir /app --no-create-home tidings
COPY --from=build /opt/tidings /opt/tidings
WORKDIR /app
COPY --chown=10001:10001 examples/myapp.py ./
ENV PATH=/opt/tidings/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# A numeric user, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# 9464: a worker's /metrics, /livez, /readyz; 9465: the exporter; 8080: the API.
EXPOSE 9464 9465 8080
ENTRYPOINT ["tidings"]
CMD ["--help"]
