# One image for every application process (web, worker, beat, bridge, migrate);
# docker-compose.yml picks the process with `command:`.
# Base pinned to an exact Python patch release and Debian release for
# reproducible builds; bump deliberately.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Unprivileged runtime user (fixed ids so volume ownership is predictable).
RUN groupadd --system --gid 10001 v2g \
 && useradd --system --uid 10001 --gid v2g --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin v2g

# Dependencies first so code changes do not invalidate this layer.
# All pinned requirements ship manylinux wheels (psycopg[binary]), so no
# compiler is needed in the image.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

# Code stays root-owned (read-only for the app); only var/ is writable.
COPY . .
# Static files for the admin, served by WhiteNoise (debug is off in the image).
RUN K_WEB__DEBUG=false K_WEB__SECRET_KEY=collectstatic-only-not-a-runtime-secret-0123456789abcdef \
        python manage.py collectstatic --noinput --verbosity 0 \
 && mkdir -p /app/var && chown -R v2g:v2g /app/var

USER v2g:v2g

EXPOSE 8000

CMD ["gunicorn", "v2g_project.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "2"]
