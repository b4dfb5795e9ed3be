"""Django settings: the only module that reads the environment.

Everything tunable comes from the typed configuration (config.yaml, the file
named by -c/--config or $V2G_CONFIG, and K_<SECTION>__<KEY> overrides); see
v2g_project/config.py and config.example.yaml. Other modules read
``django.conf.settings.V2G`` (a frozen, validated Config) and never os.environ.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import dj_database_url

from v2g_project import multiproc, queues
from v2g_project.config import DEV_SECRET_KEY, ConfigError, load_config

BASE_DIR = Path(__file__).resolve().parent.parent

try:
    V2G = load_config(os.environ, base_dir=BASE_DIR)
except ConfigError as exc:
    # A clear message and a non-zero exit beat a traceback from deep in Django.
    sys.stderr.write(f"v2g: {exc}\n")
    raise SystemExit(2) from None

# Prometheus multiprocess mode: every process (web, each Celery child, Beat,
# bridge) writes its metrics under one directory that /metrics aggregates;
# files named <hostname>-<pid namespace>-<pid> (unique across containers), see
# v2g_project/multiproc.py and docs/metrics.md. Before any metric is created.
PROMETHEUS_MULTIPROC_DIR = BASE_DIR / V2G.metrics.multiproc_dir  # an absolute path stays as it is
multiproc.enable(PROMETHEUS_MULTIPROC_DIR)

# Empty secret_key: the development key, which the configuration refuses when
# debug is off (as it refuses keys Django's `check --deploy` calls insecure).
SECRET_KEY = V2G.web.secret_key.get_secret_value() or DEV_SECRET_KEY
DEBUG = V2G.web.debug
ALLOWED_HOSTS = list(V2G.web.allowed_hosts)
CSRF_TRUSTED_ORIGINS = list(V2G.web.csrf_trusted_origins)

# --- security: web.* keys; `manage.py check --deploy` passes with debug off ----

# The admin, the browsable API and the Swagger UI take the CSRF token from the
# page, never from the cookie: no script needs to read either cookie.
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if V2G.web.behind_proxy:
    # Only behind a proxy that sets this header itself and drops any a client sent.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
if not DEBUG:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = V2G.web.ssl_redirect
    # Probes and the Prometheus scrape call the web process directly, over HTTP.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SECURE_HSTS_SECONDS = V2G.web.hsts_seconds
    SECURE_HSTS_INCLUDE_SUBDOMAINS = V2G.web.hsts_include_subdomains
    SECURE_HSTS_PRELOAD = V2G.web.hsts_preload

INSTALLED_APPS = [
    "console.admin_apps.ConsoleAdminConfig",  # django.contrib.admin with the console's site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # the Swagger UI assets, served by us (no CDN)
    "django_celery_beat",
    "django_filters",  # its form templates, for the browsable API
    "corsheaders",
    "v2g_project",
    "fleet",
    "telemetry",
    "dispatch",
    "scheduler",
    "kpis",
    "console",  # last: extends the other apps' admin screens
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before anything that can answer (WhiteNoise, CommonMiddleware); /api/ only, see below.
    "corsheaders.middleware.CorsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "v2g_project.api.RefuseNulMiddleware",  # /api/ URLs with U+0000: 400/404, see v2g_project/api.py
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "v2g_project.urls"
WSGI_APPLICATION = "v2g_project.wsgi.application"
ASGI_APPLICATION = "v2g_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database: SQLite file by default, PostgreSQL (or any URL) when set ------

_db_url = V2G.database.url.get_secret_value()
if _db_url:
    DATABASES = {
        "default": dj_database_url.parse(
            _db_url, conn_max_age=V2G.database.conn_max_age_s, conn_health_checks=True
        )
    }
else:
    _sqlite = Path(V2G.database.sqlite_path)
    _sqlite = _sqlite if _sqlite.is_absolute() else BASE_DIR / _sqlite
    _sqlite.parent.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _sqlite,
            # Web, worker, beat and bridge share the file: WAL lets readers run
            # beside one writer, IMMEDIATE transactions avoid upgrade deadlocks.
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # A file (not :memory:) so a real worker process can share the test DB.
            "TEST": {"NAME": str(_sqlite.with_name("test_" + _sqlite.name))},
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"  # storage and payloads are UTC; market days use V2G.scheduler.time_zone
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
if not DEBUG:
    # Served by WhiteNoise from STATIC_ROOT (run collectstatic; the Dockerfile does).
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }

# --- REST framework ------------------------------------------------------------

REST_FRAMEWORK = {
    # Bearer first: its WWW-Authenticate header makes a missing login a 401.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "fleet.auth.BearerTokenAuthentication",
        "fleet.auth.StaffSessionAuthentication",
    ],
    "DEFAULT_THROTTLE_CLASSES": ["fleet.auth.TokenRateThrottle"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "v2g_project.api.LimitOffsetPagination",  # strict, bounded
    # An unknown ?format= is a 404 naming it (v2g_project/api.py).
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "v2g_project.api.ContentNegotiation",
    "PAGE_SIZE": 100,
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    # DRF's parsers, refusing U+0000 anywhere in a body (v2g_project/api.py).
    "DEFAULT_PARSER_CLASSES": [
        "v2g_project.api.JSONParser",
        "v2g_project.api.FormParser",
        "v2g_project.api.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "v2g_project.openapi.AutoSchema",
}

# OpenAPI 3 schema at /api/schema/, Swagger UI at /api/docs/ (assets from
# drf-spectacular-sidecar, served by WhiteNoise: the page loads nothing from elsewhere).
SPECTACULAR_SETTINGS = {
    "TITLE": "v2g API",
    "VERSION": "1",
    "DESCRIPTION": (
        "The HTTP API of a V2G aggregator: the fleet registry, flexibility signals and their "
        "dispatches, the dispatch log, vehicle status and forecasts, day-ahead NEBEF plans.\n\n"
        "Every endpoint needs authentication: `Authorization: Bearer <token>` for integrators, "
        "or the session of a staff user logged in to the operator console. Times are ISO 8601 with "
        "a UTC offset; powers are signed kW (positive = to the grid, i.e. discharging). "
        "An invalid parameter or body is a 400 whose JSON names the field."
    ),
    "SERVE_INCLUDE_SCHEMA": False,  # the schema endpoint does not document itself
    "SCHEMA_PATH_PREFIX": "/api/",
    "COMPONENT_SPLIT_REQUEST": True,  # read-only fields (created_at...) stay out of request bodies
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # No validator badge: it would send the schema's URL to validator.swagger.io.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "displayOperationId": True, "validatorUrl": None},
}

# --- Celery (read by v2g_project.celery through the CELERY_ namespace) ---------

CELERY_BROKER_URL = V2G.celery.broker_url.get_secret_value()
CELERY_RESULT_BACKEND = V2G.celery.result_backend.get_secret_value() or CELERY_BROKER_URL
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": V2G.celery.visibility_timeout_s}
if CELERY_BROKER_URL.startswith("filesystem://"):
    # The embedded transport: queues are files, shared by every process on this machine.
    _fs = Path(V2G.celery.filesystem_dir)
    _fs = _fs if _fs.is_absolute() else BASE_DIR / _fs
    for _sub in ("queue", "processed", "results", "control"):
        (_fs / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_fs / "queue"),
        "data_folder_out": str(_fs / "queue"),
        "processed_folder": str(_fs / "processed"),
        "control_folder": str(_fs / "control"),
        "store_processed": False,
    }
    if CELERY_RESULT_BACKEND == CELERY_BROKER_URL:
        CELERY_RESULT_BACKEND = f"file://{_fs / 'results'}"
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # kombu's Redis transport, but a worker survives a Redis restart (see the module).
    CELERY_BROKER_TRANSPORT = "v2g_project.broker_recovery:Transport"
CELERY_TASK_DEFAULT_QUEUE = V2G.celery.default_queue
# One queue per class of work (dispatch, telemetry, planning, kpis) with Redis
# priorities: v2g_project/queues.py, README "Scaling out".
CELERY_TASK_QUEUES = queues.task_queues(V2G.celery)
CELERY_TASK_ROUTES = queues.task_routes(V2G.celery)
CELERY_WORKER_PREFETCH_MULTIPLIER = V2G.celery.prefetch_multiplier
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 3600
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_TASK_TIME_LIMIT = V2G.celery.task_time_limit_s
CELERY_TASK_SOFT_TIME_LIMIT = V2G.celery.task_soft_time_limit_s
CELERY_TASK_TRACK_STARTED = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": V2G.celery.visibility_timeout_s}
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
# django-celery-beat's DatabaseScheduler, touching celery.beat_heartbeat_file at each tick.
CELERY_BEAT_SCHEDULER = "v2g_project.beat:Scheduler"

# --- API: throttle counters, CORS ---------------------------------------------------

# Throttle counters must be shared by every web process (gunicorn workers):
# the broker's Redis when it is Redis, else (the embedded demo) each
# process's memory. Short timeouts: the throttle lets requests through when
# Redis does not answer rather than failing them.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "throttle": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CELERY_BROKER_URL,
            "KEY_PREFIX": "v2g-throttle",
            "OPTIONS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5},
        }
        if CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "throttle"}
    ),
}

# Cross-origin browser access to /api/ for the configured origins only; none
# configured (the default): the middleware matches no path, no CORS header at all.
CORS_ALLOWED_ORIGINS = list(V2G.api.cors_allowed_origins)
CORS_URLS_REGEX = r"^/api/" if CORS_ALLOWED_ORIGINS else r"(?!)"
CORS_ALLOW_CREDENTIALS = False  # tokens travel in the Authorization header, not cookies

# --- MQTT bridge: apps add their routes (acks, telemetry) here ---------------------

MQTT_BRIDGE_ROUTE_PROVIDERS = [
    "v2g_project.bridge.platform_routes",
    "telemetry.bridge.routes",
    "dispatch.bridge.routes",
]

# --- logging -----------------------------------------------------------------

# Process logs (not the dispatch log of SPEC §9): readable text by default, one
# JSON object per line with logging.format "json" (production). Both carry what
# a line is about (dispatch, vehicle, signal type, Celery task), see
# v2g_project/logcontext.py and docs/observability.md.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "v2g_project.logcontext.ContextFilter"}},
    "formatters": {
        "text": {
            "()": "v2g_project.logcontext.TextFormatter",
            "format": "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
        },
        "json": {"()": "v2g_project.logcontext.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": V2G.logging.format,
            "filters": ["context"],
        },
    },
    "root": {"handlers": ["console"], "level": V2G.logging.level},
    "loggers": {
        "django": {"level": "INFO" if V2G.logging.level == "DEBUG" else V2G.logging.level},
        # Celery's task logger does not propagate: give it our handler, or Celery
        # would give it its own format.
        "celery.task": {"handlers": ["console"], "propagate": False},
    },
}
# Celery workers and Beat keep the handler above instead of installing their own
# (which would ignore logging.format); --loglevel still sets the level.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Sentry (off unless a DSN is configured) -------------------------------------

# An empty DSN: the SDK is not even imported (docs/observability.md). Every
# secret of the configuration, and the Django key, is masked in what it sends.
if V2G.sentry.dsn.get_secret_value():
    from v2g_project.observability import sentry_init

    sentry_init(V2G, extra_secrets=[SECRET_KEY])
