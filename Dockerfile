# syntax=docker/dockerfile:1
#
# One small image for everything kubectl-relay runs in a cluster:
#   relay           the socat-compatible engine (also answers to `socat`, so
#                   manifests written for alpine/socat work unchanged)
#   relay-operator  the SocatTunnel operator
#   kubectl-relay   the kubectl plugin
#
#   docker build -t ghcr.io/kubectl-relay/relay:0.1.0 .
#
# Tag it with the package version: the operator's relay pods default to the
# image of its own version.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a wheel of this project, installed with its dependencies into a venv
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kubectl_relay ./kubectl_relay
COPY operator ./operator
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/relay \
 && /opt/relay/bin/pip install /wheels/*.whl \
 && ln -s relay /opt/relay/bin/socat

# --- runtime: the same Python base (the venv links to its interpreter), the
# venv, and nothing else: no compiler, no pip cache, no sources.
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="kubectl-relay" \
      org.opencontainers.image.description="socat-compatible relay engine, SocatTunnel operator and kubectl plugin" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/relay /opt/relay
# Also at socat's usual absolute path, for commands that spell it out.
RUN ln -s /opt/relay/bin/relay /usr/bin/socat
ENV PATH=/opt/relay/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# A numeric non-root user: Kubernetes can verify runAsNonRoot without an
# /etc/passwd entry, and Pod Security "restricted" admits it.
USER 65532:65532
# As alpine/socat's entrypoint is socat: `args: [TCP-LISTEN:8080,fork, ...]`
# alone runs the relay. The operator's Deployment sets `command`.
ENTRYPOINT ["relay"]
