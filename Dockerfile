# Modelgate image: one image for web, worker and beat (docker-compose.yml, deploy/k8s).
#
# BASE is pinned by digest, so a rebuild starts from the same bytes. Any Debian bookworm
# image with python3 (3.11) and its venv module will do: the official python image below,
# or a rootfs built from a Debian mirror (tests/test_image.py builds one with mmdebstrap and
# passes --build-arg BASE=localhost/modelgate-base:test). To bump the pin:
#   skopeo inspect docker://docker.io/library/python:3.11-slim-bookworm | jq -r .Digest
#   (or: docker buildx imagetools inspect python:3.11-slim-bookworm)
# and put the new sha256 here. VERSION must equal pyproject.toml's version (checked below).
# pip reads its index settings from an optional build secret, never from the image:
#   --secret id=pip.conf,src=$HOME/.config/pip/pip.conf
ARG BASE=docker.io/library/python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${BASE} AS build
ARG VERSION=0.1.0
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CONFIG_FILE=/run/secrets/pip.conf
# Whichever python3 the base has: /usr/local/bin/python3 (official) or Debian's /usr/bin/python3.
RUN python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    && python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml ./
# Dependencies in a layer of their own, rebuilt only when pyproject.toml changes.
RUN --mount=type=secret,id=pip.conf \
    python3 -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' \
      > /tmp/requirements.txt \
    && /opt/venv/bin/pip install --quiet -r /tmp/requirements.txt
COPY README.md ./
COPY config config
COPY registry registry
COPY webui webui
COPY workers workers
# Modelgate itself as a wheel: the venv stays as the dependency layer left it, so the final
# stage's copy of it is cached across code changes.
RUN --mount=type=secret,id=pip.conf \
    /opt/venv/bin/pip wheel --quiet --no-deps --wheel-dir /wheels . \
    && { [ -e "/wheels/modelgate-$VERSION-py3-none-any.whl" ] \
         || { echo "VERSION=$VERSION but pyproject.toml built $(ls /wheels)" >&2; exit 1; }; }

FROM ${BASE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="modelgate" \
      org.opencontainers.image.description="A model registry with review, workers, Git history and a REST API." \
      org.opencontainers.image.version="${VERSION}"
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    MODELGATE_VAR_DIR=/data MODELGATE_STORAGE_DIR=/data/store MODELGATE_GIT_DIR=/data/git \
    MODELGATE_STATIC_ROOT=/app/static
# git runs the Git mirror; zoneinfo is needed by kombu (Celery) and Django. The official
# image has tzdata but not git; a minimal Debian rootfs may lack either.
RUN missing=""; \
    command -v git >/dev/null || missing="$missing git"; \
    [ -e /usr/share/zoneinfo/UTC ] || missing="$missing tzdata"; \
    if [ -n "$missing" ]; then \
      apt-get update && apt-get install -y --no-install-recommends $missing \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
    && useradd --create-home --uid 1000 --user-group modelgate \
    && mkdir -p /data && chown modelgate:modelgate /data
COPY --from=build /opt/venv /opt/venv
RUN --mount=type=bind,from=build,source=/wheels,target=/tmp/wheels \
    pip install --quiet --no-deps --no-index --no-compile /tmp/wheels/*.whl
WORKDIR /app
COPY manage.py pyproject.toml ./
COPY config config
COPY registry registry
COPY webui webui
COPY workers workers
COPY fixtures fixtures
# A throwaway key and broker: without them, settings would write a key and a broker
# directory into the image's /data. Static files land in /app/static, outside /data, so a
# volume mounted on /data (compose, k8s) neither hides them nor keeps stale ones.
RUN SECRET_KEY=collectstatic-only CELERY_BROKER_URL=memory:// \
    python manage.py collectstatic --no-input -v0 \
    && chown -R modelgate:modelgate /data
USER modelgate
EXPOSE 8000
CMD ["gunicorn", "config.wsgi:application", "--config", "config/gunicorn.conf.py", \
     "--bind", "0.0.0.0:8000", "--workers", "3"]
