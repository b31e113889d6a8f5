# The Braid operator image. Two stages: the first builds a virtual environment with Braid and
# its dependencies; the second copies only that onto a slim Python base, runs as a non-root
# user and writes nothing to its root file system (the chart mounts it read-only, /tmp is an
# emptyDir), so byte code is compiled at build time and never at run time.
#
#   docker build -t ghcr.io/braid-dev/braid:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/braid
COPY pyproject.toml README.md ./
COPY operator ./operator
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
