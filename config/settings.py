"""Modelgate settings: everything comes from the environment, with embedded defaults.

With nothing set it runs on SQLite, a blob store under ./var/store and a Celery broker
kept in files under ./var/broker, so a newcomer needs nothing but Python. Set
DATABASE_URL / CELERY_BROKER_URL to run on Postgres and Redis.
"""

import ipaddress
import os
import re
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config import sso

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("MODELGATE_VAR_DIR", BASE_DIR / "var")).resolve()


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    # A laptop gets a random key kept under ./var; a deployment must set SECRET_KEY.
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        import secrets

        VAR_DIR.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    SECRET_KEY = key_file.read_text().strip()

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
# The server's address as its clients reach it (https://modelgate.example.com), for URLs it
# hands out that must work from anywhere (MLflow download URIs); empty: the request's own
# scheme and Host (one of ALLOWED_HOSTS), which a proxy may not pass on faithfully.
MODELGATE_PUBLIC_URL = os.environ.get("MODELGATE_PUBLIC_URL", "").strip().rstrip("/")
if MODELGATE_PUBLIC_URL and not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", MODELGATE_PUBLIC_URL):
    raise ImproperlyConfigured("MODELGATE_PUBLIC_URL must be an http(s):// URL.")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc as static files: no CDN
    "django_prometheus",
    "axes",  # sign-in lockouts (registry/services/signin.py)
    "registry",
    "webui",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "registry.observability.RequestIdMiddleware",
    "registry.unavailable.DatabaseUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Last, as axes asks: turns a locked-out /login/ or /admin/login/ into webui.lockout's page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
                "webui.context.navigation",
            ],
        },
    },
]

# --- Database ------------------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{VAR_DIR / 'modelgate.sqlite3'}",
        conn_max_age=60,
        # A pooled connection that a database restart killed is found and replaced before
        # a request uses it, instead of failing that request.
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # One writer at a time, shared by gunicorn's threads, the worker and beat. WAL: readers
    # never wait for it; IMMEDIATE: a transaction takes the write lock at BEGIN, so it waits
    # (up to `timeout` s) instead of failing "database is locked" when it upgrades from
    # reading to writing; synchronous=NORMAL: a commit does not fsync (WAL stays consistent,
    # a power cut may lose the last commits). Connections persist like Postgres's (60 s).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # A file, not :memory:, so that worker and server processes started by tests share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Backups dump with microsecond timestamps (registry/serialization.py).
SERIALIZATION_MODULES = {"json-exact": "registry.serialization"}

# --- Cache (throttling) --------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# --- Auth, sessions, security --------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# Password guessing, at every door (UI, admin, token endpoint, MLflow Basic auth): axes'
# backend goes first (AUTHENTICATION_BACKENDS, under single sign-on below), counts failures
# per username *and* client address, and past the limit refuses that pair (right password
# included) until the cool-off has passed since its last failure; other users and other
# addresses are unaffected. Attempts live in the database.
AXES_FAILURE_LIMIT = int(os.environ.get("MODELGATE_LOGIN_FAILURE_LIMIT", 5))
AXES_COOLOFF_TIME = timedelta(minutes=float(os.environ.get("MODELGATE_LOGIN_COOLOFF_MINUTES", 15)))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# Refused attempts during a lockout do not restart it: it ends one cool-off after it began.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = True
AXES_DISABLE_ACCESS_LOG = True  # successful sign-ins need no table of their own
AXES_CLIENT_IP_CALLABLE = "registry.services.client_address.client_address"
AXES_LOCKOUT_CALLABLE = "webui.lockout.lockout_response"
# A single sign-on callback is no password guess: axes neither counts nor refuses it.
AXES_WHITELIST_CALLABLE = "registry.services.signin.not_a_password"
# Proxies whose X-Forwarded-For is believed (IPs or CIDRs, comma-separated); empty: none,
# the peer's address is the client's (registry/services/client_address.py).
MODELGATE_TRUSTED_PROXIES = env_list("MODELGATE_TRUSTED_PROXIES")
for _proxy in MODELGATE_TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy, strict=False)
    except ValueError as error:
        raise ImproperlyConfigured(f"MODELGATE_TRUSTED_PROXIES: {error}") from None

# --- Single sign-on: OpenID Connect with mozilla-django-oidc (config/sso.py, webui/oidc.py) --
# MODELGATE_OIDC_ISSUER (its /.well-known/openid-configuration is read at the first sign-in,
# not at start), _CLIENT_ID, _CLIENT_SECRET, _SCOPES, _GROUPS_CLAIM, _GROUP_MAP (IdP groups
# to team roles and Django groups, checked here), and MODELGATE_LOCAL_LOGIN=0 to turn every
# password door off. Users are created at their first sign-in; their SSO memberships are
# re-read from the group claim at every one (registry/services/sso.py).
_SSO = sso.from_env(os.environ)
AUTHENTICATION_BACKENDS = _SSO["AUTHENTICATION_BACKENDS"]
MODELGATE_LOCAL_LOGIN = _SSO["MODELGATE_LOCAL_LOGIN"]
MODELGATE_OIDC_ISSUER = _SSO["MODELGATE_OIDC_ISSUER"]
MODELGATE_OIDC_GROUPS_CLAIM = _SSO["MODELGATE_OIDC_GROUPS_CLAIM"]
MODELGATE_OIDC_GROUP_MAP = _SSO["MODELGATE_OIDC_GROUP_MAP"]
MODELGATE_OIDC_REDIRECT_URI = _SSO["MODELGATE_OIDC_REDIRECT_URI"]
OIDC_RP_CLIENT_ID = _SSO["OIDC_RP_CLIENT_ID"]
OIDC_RP_CLIENT_SECRET = _SSO["OIDC_RP_CLIENT_SECRET"]
OIDC_RP_SCOPES = _SSO["OIDC_RP_SCOPES"]
OIDC_RP_SIGN_ALGO = _SSO["OIDC_RP_SIGN_ALGO"]
OIDC_USE_PKCE = True
OIDC_PKCE_CODE_CHALLENGE_METHOD = "S256"
OIDC_TIMEOUT = float(os.environ.get("MODELGATE_OIDC_TIMEOUT", 10))  # the library waits forever
OIDC_AUTHENTICATE_CLASS = "webui.oidc.Authenticate"
OIDC_CALLBACK_CLASS = "webui.oidc.Callback"
OIDC_REDIRECT_FIELD_NAME = "next"
OIDC_TOKEN_USE_BASIC_AUTH = True  # client_secret_basic: what every provider must accept
LOGIN_REDIRECT_URL_FAILURE = "/login/?sso=failed"

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"
SESSION_COOKIE_AGE = int(os.environ.get("MODELGATE_SESSION_SECONDS", 8 * 3600))
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = env_bool("MODELGATE_SECURE_COOKIES", not DEBUG and env_bool("HTTPS"))
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- I/O limits ----------------------------------------------------------------------
# Small multipart parts stay in memory; anything larger streams to the blob store.
FILE_UPLOAD_MAX_MEMORY_SIZE = 256 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = 2000
DATA_UPLOAD_MAX_NUMBER_FIELDS = 2000

# --- Static --------------------------------------------------------------------------
# Nothing is served as media; a non-empty MEDIA_URL keeps Django's test server from
# treating every path as a media file relative to the (process-wide) working directory.
MEDIA_URL = "/media/"
MEDIA_ROOT = VAR_DIR / "media"
STATIC_URL = "/static/"
# An image collects static files at build time: MODELGATE_STATIC_ROOT keeps them out of
# MODELGATE_VAR_DIR, which deployments mount a volume over.
STATIC_ROOT = Path(os.environ.get("MODELGATE_STATIC_ROOT", VAR_DIR / "static")).resolve()
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns about a missing one
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# --- REST API ------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "registry.api.auth.BearerTokenAuthentication",
        "registry.api.auth.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["registry.api.permissions.ScopedAccess"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["registry.api.parsers.StrictJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "registry.api.pagination.PagePagination",
    "EXCEPTION_HANDLER": "registry.api.errors.exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "token_create": os.environ.get("MODELGATE_TOKEN_RATE", "30/min"),
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DATETIME_FORMAT": "iso-8601",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Modelgate API",
    "DESCRIPTION": "Model registry: models, versions, files, aliases, promotions, events.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "registry.api.schema.add_links",
    ],
    # /api/v1/docs/ and /api/v1/redoc/ load their JavaScript and CSS from our own static
    # files (drf-spectacular-sidecar, gathered by collectstatic, served by whitenoise), so
    # they work offline and behind a firewall.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Content-Security-Policy on every response (django-csp): no inline scripts, styles or event
# handlers anywhere, so injected markup cannot run. The docs pages' own needs are added in
# webui/views/docs.py.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}

# --- Celery --------------------------------------------------------------------------
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://localhost//")
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    # kombu's, but a message is never seen half-written (workers/file_broker.py).
    CELERY_BROKER_TRANSPORT = "workers.file_broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
        # The worker lists the folder this often when it is empty (kombu's default: 1 s,
        # which a new version's pipeline would wait half of on average); a listing of a
        # near-empty folder costs microseconds.
        "polling_interval": float(os.environ.get("MODELGATE_FILE_BROKER_POLL_SECONDS", 0.05)),
    }
else:
    # Longer than the longest task, so an unacked task is not handed to a second worker.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 6 * 3600}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Long pipeline jobs have their own queue, so they never sit in a worker's prefetch window
# ahead of promotions and webhooks; a worker consumes both unless started with -Q.
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_QUEUES = {"celery": {}, "processing": {}}
# With acks_late, a full prefetch window is only refilled on the event loop's next timer
# tick (about a second); a few slots keep short jobs flowing (see bench promotion-latency).
CELERY_WORKER_PREFETCH_MULTIPLIER = int(os.environ.get("MODELGATE_WORKER_PREFETCH", 4))
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Publishing must not hang a request when the broker is down; the reconciler re-sends.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Only one beat sends the schedule; others stand by (workers/beat_lock.py). The Redis lock
# lapses this long after its holder stops renewing it.
CELERY_BEAT_SCHEDULER = "workers.beat_lock:LockedScheduler"
MODELGATE_BEAT_LOCK_SECONDS = float(os.environ.get("MODELGATE_BEAT_LOCK_SECONDS", 30))

# --- Modelgate -----------------------------------------------------------------------
MODELGATE_STORAGE_URL = os.environ.get(
    "MODELGATE_STORAGE_URL",
    "file://" + str(Path(os.environ.get("MODELGATE_STORAGE_DIR", VAR_DIR / "store")).resolve()),
)
MODELGATE_GIT_DIR = Path(os.environ.get("MODELGATE_GIT_DIR", VAR_DIR / "git")).resolve()
# Where the Git mirror's one history lives when there are several workers (empty: only in
# MODELGATE_GIT_DIR, which then must be a single worker's persistent disk). Set, the local
# directory is a cache: workers fetch, commit on the remote's tip (branch main) and push.
# Credentials go in the URL (https://user:token@host/repo.git, never logged) or, for ssh
# remotes, in the worker's GIT_SSH_COMMAND (e.g. "ssh -i /secrets/key -o IdentitiesOnly=yes").
MODELGATE_GIT_REMOTE = os.environ.get("MODELGATE_GIT_REMOTE", "")
MODELGATE_MAX_FILE_SIZE = int(os.environ.get("MODELGATE_MAX_FILE_SIZE", 64 * 1024**3))
MODELGATE_MAX_FILES_PER_VERSION = int(os.environ.get("MODELGATE_MAX_FILES_PER_VERSION", 2000))
# A version's description, metrics, params, tags and lineage together, as stored JSON; more
# gets 413 (each field's own limits would still let megabytes through).
# /readyz calls storage "degraded" below this much free space (local stores), and /metrics
# exports modelgate_storage_free_bytes, so operators hear of a filling disk before the 507s.
MODELGATE_STORAGE_MIN_FREE_BYTES = int(os.environ.get("MODELGATE_STORAGE_MIN_FREE_BYTES", 1024**3))
# A version whose package finds the disk full waits this long between tries (its attempts
# are not used up; its status says it is waiting for space).
MODELGATE_FULL_DISK_RETRY_SECONDS = float(os.environ.get("MODELGATE_FULL_DISK_RETRY_SECONDS", 300))
MODELGATE_MAX_METADATA_BYTES = int(os.environ.get("MODELGATE_MAX_METADATA_BYTES", 256 * 1024))
MODELGATE_TOKEN_MAX_DAYS = int(os.environ.get("MODELGATE_TOKEN_MAX_DAYS", 365))
# Jobs: a running job's lease (renewed while it works), retries, and when the reconciler
# re-sends a job whose message never reached a worker.
MODELGATE_JOB_LEASE_SECONDS = int(os.environ.get("MODELGATE_JOB_LEASE_SECONDS", 120))
MODELGATE_JOB_MAX_ATTEMPTS = int(os.environ.get("MODELGATE_JOB_MAX_ATTEMPTS", 6))
MODELGATE_JOB_RESEND_SECONDS = int(os.environ.get("MODELGATE_JOB_RESEND_SECONDS", 60))
MODELGATE_RECONCILE_SECONDS = float(os.environ.get("MODELGATE_RECONCILE_SECONDS", 30))
# MLflow's create_model_version holds its answer this long at most for the new version's
# pipeline (verify, scan...) and answers READY if it finished meanwhile; else
# PENDING_REGISTRATION, and the client polls (every 3 s). 0: answer at once.
MODELGATE_MLFLOW_CREATE_WAIT_SECONDS = float(
    os.environ.get("MODELGATE_MLFLOW_CREATE_WAIT_SECONDS", 3)
)
# The scanner's bounds per file (exceeding one makes the scan "unverified", naming it) and
# the operator's extra dangerous pickle globals ("module.name" or a whole "module"),
# judged unsafe on top of the built-in block-list; `manage.py rescan` applies a change.
MODELGATE_SCAN_MAX_EXPANDED_BYTES = int(
    os.environ.get("MODELGATE_SCAN_MAX_EXPANDED_BYTES", 64 * 1024**3)
)
MODELGATE_SCAN_MAX_RATIO = float(os.environ.get("MODELGATE_SCAN_MAX_RATIO", 200))
MODELGATE_SCAN_MAX_DEPTH = int(os.environ.get("MODELGATE_SCAN_MAX_DEPTH", 4))
MODELGATE_SCAN_MAX_MEMBERS = int(os.environ.get("MODELGATE_SCAN_MAX_MEMBERS", 10_000))
MODELGATE_SCAN_SECONDS_PER_FILE = float(os.environ.get("MODELGATE_SCAN_SECONDS_PER_FILE", 300))
MODELGATE_SCAN_UNSAFE_GLOBALS = [
    g.strip() for g in os.environ.get("MODELGATE_SCAN_UNSAFE_GLOBALS", "").split(",") if g.strip()
]
MODELGATE_WEBHOOK_ALLOW_PRIVATE = env_bool("MODELGATE_WEBHOOK_ALLOW_PRIVATE", False)
MODELGATE_WEBHOOK_TIMEOUT = float(os.environ.get("MODELGATE_WEBHOOK_TIMEOUT", 10))
# Seconds before each retry of a failing webhook (each ±20%; Standard Webhooks' schedule).
_WEBHOOK_RETRIES = os.environ.get(
    "MODELGATE_WEBHOOK_RETRY_DELAYS", "5,300,1800,7200,18000,36000,36000"
)
MODELGATE_WEBHOOK_RETRY_DELAYS = [float(s) for s in _WEBHOOK_RETRIES.split(",") if s.strip()]
CELERY_BEAT_SCHEDULE = {
    "reconcile-jobs": {"task": "modelgate.reconcile", "schedule": MODELGATE_RECONCILE_SECONDS},
    "sync-git": {"task": "modelgate.sync_git", "schedule": 300.0},
}

if not DEBUG and not SECRET_KEY:  # pragma: no cover - guarded above
    raise ImproperlyConfigured("SECRET_KEY must be set")

# MODELGATE_LOG_FORMAT=json logs one JSON object per line (docker-compose sets it), text a
# readable line; both carry the request id (registry.observability).
MODELGATE_LOG_FORMAT = os.environ.get("MODELGATE_LOG_FORMAT", "text").strip().lower()
if MODELGATE_LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured("MODELGATE_LOG_FORMAT must be json or text.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "registry.observability.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "registry.observability.json_formatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if MODELGATE_LOG_FORMAT == "json" else "plain",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # axes says INFO on every failed sign-in; its WARNINGs (failures, lockouts) are enough.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "axes": {"level": "WARNING"}},
}

# --- Monitoring: prediction ingest and retention -------------------------------------
# A batch POSTed to /api/v1/monitoring/predictions/ (or /feedback/) holds at most this many
# records and bytes; more gets 413. Records older than the retention period are dropped
# (whole day partitions on Postgres) by a beat task, which also adds the coming days'.
MODELGATE_INGEST_MAX_RECORDS = int(os.environ.get("MODELGATE_INGEST_MAX_RECORDS", 10_000))
MODELGATE_INGEST_MAX_BYTES = int(os.environ.get("MODELGATE_INGEST_MAX_BYTES", 32 * 1024**2))
MODELGATE_PREDICTION_RETENTION_DAYS = int(os.environ.get("MODELGATE_PREDICTION_RETENTION_DAYS", 30))
# Aggregated windows (what charts, monitors and healthy_in gates read) are kept longer; the
# same beat task deletes those that ended before this many days (never before the records).
MODELGATE_MONITORING_WINDOW_RETENTION_DAYS = int(
    os.environ.get("MODELGATE_MONITORING_WINDOW_RETENTION_DAYS", 400)
)
CELERY_BEAT_SCHEDULE["prediction-retention"] = {
    "task": "modelgate.expire_predictions",
    "schedule": float(os.environ.get("MODELGATE_RETENTION_SECONDS", 3600)),
}


# --- Storage backends and encryption at rest ----------------------------------------
# MODELGATE_STORAGE_URL above may also be s3://bucket/prefix; boto3 reads AWS_ENDPOINT_URL,
# credentials and region from the environment itself. Encryption is on whenever a master
# key is set (32 bytes as base64 or hex, inline or in a file); with none, blobs are
# plaintext and /readyz and the log say so. Old keys still unwrap data keys until
# `manage.py rotate_keys` has re-wrapped them all under the current one.
def _key_text(name: str) -> str:
    value = os.environ.get(name, "").strip()
    path = os.environ.get(f"{name}_FILE", "").strip()
    if value and path:
        raise ImproperlyConfigured(f"Set {name} or {name}_FILE, not both.")
    return Path(path).read_text().strip() if path else value


MODELGATE_ENCRYPTION_KEY = _key_text("MODELGATE_ENCRYPTION_KEY")
MODELGATE_ENCRYPTION_OLD_KEYS = [
    k.strip() for k in _key_text("MODELGATE_ENCRYPTION_OLD_KEYS").replace(",", "\n").split() if k
]
# Downloads from an unencrypted S3 store may be answered with a redirect to a presigned URL.
MODELGATE_STORAGE_REDIRECT = env_bool("MODELGATE_STORAGE_REDIRECT", False)
MODELGATE_STORAGE_REDIRECT_SECONDS = int(os.environ.get("MODELGATE_STORAGE_REDIRECT_SECONDS", 300))

# --- The registry watched too: GET /metrics (issue 8; registry/observability.py) ----------
# With a token set, /metrics answers only `Authorization: Bearer <token>` (or a signed-in
# administrator); without one, only loopback and administrators. Set PROMETHEUS_MULTIPROC_DIR
# (config/gunicorn.conf.py empties it at every start) to sum request metrics over gunicorn's
# workers.
MODELGATE_METRICS_TOKEN = os.environ.get("MODELGATE_METRICS_TOKEN", "").strip()
# Off (django-prometheus' default, kept on purpose): its migration gauges are per process
# ("all" mode), so every worker that ever ran would stay in the scrape as a pid of its own.
PROMETHEUS_EXPORT_MIGRATIONS = False

# --- Monitoring: windows, drift, monitors and alerts (issue 8, slice 2) ----------------
# A beat task rolls prediction records into windows of MODELGATE_MONITOR_WINDOW_SECONDS per
# model, version and environment every MODELGATE_MONITOR_SECONDS, then evaluates monitors.
# A feature has drifted when its PSI exceeds MODELGATE_DRIFT_PSI or its test's p-value is
# below MODELGATE_DRIFT_P_VALUE, once a window holds MODELGATE_DRIFT_MIN_SAMPLES records.
MODELGATE_MONITOR_WINDOW_SECONDS = int(os.environ.get("MODELGATE_MONITOR_WINDOW_SECONDS", 300))
MODELGATE_MONITOR_SECONDS = float(os.environ.get("MODELGATE_MONITOR_SECONDS", 60))
MODELGATE_MONITOR_BACKFILL_SECONDS = int(
    os.environ.get("MODELGATE_MONITOR_BACKFILL_SECONDS", 24 * 3600)
)
MODELGATE_DRIFT_PSI = float(os.environ.get("MODELGATE_DRIFT_PSI", 0.2))
MODELGATE_DRIFT_P_VALUE = float(os.environ.get("MODELGATE_DRIFT_P_VALUE", 0.01))
MODELGATE_DRIFT_MIN_SAMPLES = int(os.environ.get("MODELGATE_DRIFT_MIN_SAMPLES", 100))
# Busier windows measure drift on a deterministic sample of this many records (0: all).
MODELGATE_DRIFT_SAMPLE = int(os.environ.get("MODELGATE_DRIFT_SAMPLE", 100_000))
CELERY_BEAT_SCHEDULE["monitoring-windows"] = {
    "task": "modelgate.aggregate_monitoring",
    "schedule": MODELGATE_MONITOR_SECONDS,
}

# --- Data care: gc_store, verify_store, backup (issue 9; registry/services/store_care.py) --
# gc_store deletes a blob nothing refers to once it has not been written or deduplicated
# onto for the grace period, and never within the in-flight window (how long an upload may
# take between storing a blob and recording the version, package or artifact using it).
# Staged chunks of abandoned uploads and temporary objects go after the longer of the two.
MODELGATE_GC_GRACE_SECONDS = float(os.environ.get("MODELGATE_GC_GRACE_SECONDS", 24 * 3600))
MODELGATE_GC_INFLIGHT_SECONDS = float(os.environ.get("MODELGATE_GC_INFLIGHT_SECONDS", 3600))
# Share of the referenced blobs a daily beat task re-hashes (0 turns it off); damage marks
# the versions using the blob, like `manage.py verify_store`, which checks everything.
MODELGATE_VERIFY_SAMPLE = float(os.environ.get("MODELGATE_VERIFY_SAMPLE", 0.01))
if MODELGATE_VERIFY_SAMPLE > 0:
    CELERY_BEAT_SCHEDULE["verify-sample"] = {
        "task": "modelgate.verify_sample",
        "schedule": float(os.environ.get("MODELGATE_VERIFY_SECONDS", 24 * 3600)),
    }
