# One image for the three Python services; docker-compose.yml runs it with a different command each:
#   gateway  gunicorn -c services/web/gunicorn_public_conf.py -b 0.0.0.0:8080 --env OTEL_SERVICE_NAME=gateway 'services.gateway:create_app()'
#   users    gunicorn -c services/web/gunicorn_conf.py -b 0.0.0.0:8081 --env OTEL_SERVICE_NAME=users 'services.users:create_app()'
#   worker   celery -A services.worker.celery_app worker --loglevel INFO
# (the commands of the embedded local stack, listening on all interfaces of the container).
#
# The base image tag is pinned in .env (PYTHON_TAG) and passed by compose; the default below only
# serves a bare `docker build .`.
ARG PYTHON_TAG=3.11-slim

# ---- builder: the locked dependencies in a virtualenv --------------------------------------------
FROM python:${PYTHON_TAG} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml requirements.lock ./
# The project's runtime dependencies ([project].dependencies) at exactly the versions requirements.lock
# pins; the lock also holds the dev extra (pytest, ruff, a 70 MB docker-compose binary…), which stays
# out of the image. tests/static check that every runtime dependency is pinned in the lock.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > runtime-requirements.txt \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --constraint requirements.lock --requirement runtime-requirements.txt

# ---- runtime: the venv, the services' code, a non-root user ----------------------------------------
FROM python:${PYTHON_TAG} AS runtime
# A fixed uid/gid: compose may run the container as the host user instead (TRACEHOP_UID/GID), so
# nothing below depends on the name; files are world-readable and /app/logs is the only place written.
RUN groupadd --system --gid 10001 tracehop \
    && useradd --system --uid 10001 --gid tracehop --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin tracehop
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TRACEHOP_LOG_DIR=/app/logs
WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
# Only what the services run: they never import the local tooling package (tracehop/).
COPY pyproject.toml ./
COPY services ./services
RUN mkdir -p /app/logs && chown tracehop:tracehop /app/logs
USER tracehop
EXPOSE 8080 8081 9101
CMD ["gunicorn", "-c", "services/web/gunicorn_public_conf.py", "-b", "0.0.0.0:8080", \
     "--env", "OTEL_SERVICE_NAME=gateway", "services.gateway:create_app()"]
