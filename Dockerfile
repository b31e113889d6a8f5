# The Braid image: the operator, and `braid ui` for the chart's web UI. Three stages: the UI's
# htmx from the npm registry (pinned by ui/package-lock.json); a virtual environment with
# Braid and its dependencies; only that copied onto a slim Python base, run as a non-root user
# writing nothing to its root file system (the chart mounts it read-only, /tmp is an
# emptyDir), so byte code is compiled at build time and never at run time.
#
#   docker build -t ghcr.io/braid-dev/braid:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG NODE_IMAGE=node:20.20.2-bookworm-slim

# The web UI's two browser libraries, at the versions and integrity ui/package-lock.json pins
# (what scripts/ui-assets does outside a container).
FROM ${NODE_IMAGE} AS ui
WORKDIR /ui
COPY ui/package.json ui/package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/braid
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY --from=ui /ui/node_modules/htmx.org/dist/htmx.min.js /ui/node_modules/htmx-ext-sse/dist/sse.min.js ./operator/braid/ui/static/vendor/
RUN /opt/braid/bin/pip install --no-cache-dir . \
    && /opt/braid/bin/python -m compileall -q -j 0 /opt/braid/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="braid" \
      org.opencontainers.image.description="Agentic workflows as Kubernetes resources: the Braid operator" \
      org.opencontainers.image.source="https://github.com/braid-dev/braid" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/braid /opt/braid
ENV PATH=/opt/braid/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A numeric user, so runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080 8081
ENTRYPOINT ["braid", "operator"]
CMD ["--log-format=json", "--health-port=8081", "--health-address=0.0.0.0"]
