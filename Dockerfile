# Modelgate image: one image for web, worker and beat.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    MODELGATE_VAR_DIR=/data MODELGATE_STORAGE_DIR=/data/store MODELGATE_GIT_DIR=/data/git
RUN apt-get update && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 modelgate && mkdir /data && chown modelgate /data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config config
COPY registry registry
COPY webui webui
COPY workers workers
COPY fixtures fixtures
COPY manage.py ./
RUN pip install --no-cache-dir . && python manage.py collectstatic --no-input -v0 \
    && chown -R modelgate /data
USER modelgate
EXPOSE 8000
CMD ["gunicorn", "config.wsgi:application", "--config", "config/gunicorn.conf.py", \
     "--bind", "0.0.0.0:8000", "--workers", "3"]
