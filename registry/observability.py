"""The registry watched too: request ids in every log line, and `GET /metrics`.

- `RequestIdMiddleware` takes the caller's `X-Request-ID` (when it looks like an id) or
  makes one, keeps it in a context variable for the request and returns it in the answer;
  `RequestIdFilter` puts it on every log record (Celery tasks use their task id), so one
  request's lines can be found across the log. `MODELGATE_LOG_FORMAT=json` logs one JSON
  object per line (python-json-logger), `text` (the default) a readable line.
- `metrics()` serves Prometheus text: django-prometheus' request/response metrics plus
  `RegistryCollector`, which reads jobs, webhook deliveries and promotion latency from
  the database at scrape time (no counters to keep in step across processes).
"""

import hmac
import ipaddress
import logging
import os
import re
import uuid
from contextvars import ContextVar

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, Max, Min, Q
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from registry.services.client_address import client_address, is_trusted_proxy

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
# The same shape as a captured prediction's request id; anything else is replaced.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
request_id: ContextVar[str] = ContextVar("modelgate_request_id", default="-")


# --- request ids and logs ----------------------------------------------------------------


class RequestIdMiddleware:
    """Give every request an id (the caller's, if sane), for its log lines and its answer."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        rid = given if REQUEST_ID_PATTERN.fullmatch(given) else uuid.uuid4().hex
        request.request_id = rid
        token = request_id.set(rid)
        try:
            response = self.get_response(request)
        finally:
            request_id.reset(token)
        response[REQUEST_ID_HEADER] = rid
        return response


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record (set on handlers, so all loggers get it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            # django.request logs a 4xx/5xx after the middleware has returned; it passes
            # the request along, which still knows its id.
            request = getattr(record, "request", None)
            record.request_id = getattr(request, "request_id", None) or request_id.get()
        return True


# settings.LOGGING uses these (MODELGATE_LOG_FORMAT picks one).
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s"
JSON_RENAME = {"asctime": "time", "levelname": "level", "name": "logger"}


def json_formatter() -> logging.Formatter:
    """One JSON object per line: time, level, logger, message, request_id and any extras."""
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(JSON_FIELDS, rename_fields=JSON_RENAME)


def _celery_logging() -> None:
    """Celery sets up its own handlers in the worker: give them the same format and ids."""
    try:
        from celery import signals
    except ImportError:  # pragma: no cover - celery is a dependency
        return

    def _format(logger=None, **_):
        json_lines = getattr(settings, "MODELGATE_LOG_FORMAT", "text") == "json"
        formatter = json_formatter() if json_lines else logging.Formatter(TEXT_FORMAT)
        for handler in (logger or logging.getLogger()).handlers:
            handler.setFormatter(formatter)
            handler.addFilter(RequestIdFilter())

    def _task_started(task_id=None, **_):
        request_id.set(task_id or "-")

    def _task_done(**_):
        request_id.set("-")

    signals.after_setup_logger.connect(_format, weak=False)
    signals.after_setup_task_logger.connect(_format, weak=False)
    signals.task_prerun.connect(_task_started, weak=False)
    signals.task_postrun.connect(_task_done, weak=False)


_celery_logging()


# --- GET /metrics ----------------------------------------------------------------------

# Seconds from approval (or request, when no approval is needed) to promoted.
PROMOTION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)


class RegistryCollector:
    """Gauges read from the database at scrape time: jobs, deliveries, promotion latency."""

    def describe(self):
        return []  # nothing to read at registration; the names are not fixed per scrape

    def collect(self):
        up = GaugeMetricFamily("modelgate_database_up", "Whether the metrics query succeeded.")
        try:
            families = list(self._families())
        except DatabaseError as exc:  # a scrape must still answer while the database is down
            log.warning("metrics: database query failed: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        from registry.storage import get_store

        free = get_store().free_bytes()
        if free is not None:
            yield GaugeMetricFamily(
                "modelgate_storage_free_bytes",
                "Free space where the blob store writes (a full disk answers 507).",
                value=free,
            )
        yield from families

    def _families(self):
        from registry.models import Alert, Job, Promotion, WebhookDelivery

        jobs = GaugeMetricFamily(
            "modelgate_jobs", "Background jobs by kind and state.", labels=["kind", "state"]
        )
        for row in Job.objects.values("kind", "state").annotate(n=Count("id")).order_by():
            jobs.add_metric([row["kind"], row["state"]], row["n"])
        yield jobs

        now = timezone.now()
        oldest = GaugeMetricFamily(
            "modelgate_jobs_oldest_queued_seconds",
            "Age of the oldest queued job that is due, by kind (queue lag).",
            labels=["kind"],
        )
        due = Job.objects.filter(state=Job.State.QUEUED, not_before__lte=now)
        for row in due.values("kind").annotate(first=Min("enqueued_at")).order_by():
            oldest.add_metric([row["kind"]], max(0.0, (now - row["first"]).total_seconds()))
        yield oldest

        failures = GaugeMetricFamily(
            "modelgate_job_failures",
            "Jobs whose last attempt failed, by kind: still retrying, or given up.",
            labels=["kind", "outcome"],
        )
        rows = (
            Job.objects.exclude(last_error="")
            .exclude(state=Job.State.DONE)
            .values("kind")
            .annotate(
                retrying=Count("id", filter=~Q(state=Job.State.FAILED)),
                gave_up=Count("id", filter=Q(state=Job.State.FAILED)),
            )
            .order_by()
        )
        for row in rows:
            failures.add_metric([row["kind"], "retrying"], row["retrying"])
            failures.add_metric([row["kind"], "gave_up"], row["gave_up"])
        yield failures

        deliveries = GaugeMetricFamily(
            "modelgate_webhook_deliveries", "Webhook deliveries by state.", labels=["state"]
        )
        for row in WebhookDelivery.objects.values("state").annotate(n=Count("id")).order_by():
            deliveries.add_metric([row["state"]], row["n"])
        yield deliveries

        firing = GaugeMetricFamily(
            "modelgate_alerts_firing",
            "Monitoring alerts firing now, by model and environment.",
            labels=["model", "environment"],
        )
        rows = (
            Alert.objects.filter(state=Alert.State.FIRING)
            .values("monitor__model__name", "monitor__environment")
            .annotate(n=Count("id"))
            .order_by()
        )
        for row in rows:
            firing.add_metric([row["monitor__model__name"], row["monitor__environment"]], row["n"])
        yield firing

        latency = HistogramMetricFamily(
            "modelgate_promotion_latency_seconds",
            "From approval (or the request, when no approval is needed) to promoted.",
            labels=["environment"],
        )
        promoted = (
            Promotion.objects.filter(state=Promotion.State.PROMOTED, promoted_at__isnull=False)
            .annotate(
                approved=Coalesce(
                    Max("reviews__at", filter=Q(reviews__decision="approve")), "requested_at"
                )
            )
            .values_list("environment__name", "approved", "promoted_at")
        )
        by_environment: dict[str, list[float]] = {}
        for environment, approved, promoted_at in promoted:
            seconds = max(0.0, (promoted_at - approved).total_seconds())
            by_environment.setdefault(environment, []).append(seconds)
        for environment, values in sorted(by_environment.items()):
            buckets = [
                (floatToGoString(bound), sum(1 for v in values if v <= bound))
                for bound in PROMOTION_BUCKETS
            ]
            buckets.append(("+Inf", len(values)))
            latency.add_metric([environment], buckets, sum_value=sum(values))
        yield latency


_REGISTRY_METRICS = CollectorRegistry(auto_describe=False)
_REGISTRY_METRICS.register(RegistryCollector())


def _process_metrics() -> bytes:
    """django-prometheus' metrics: across gunicorn workers when PROMETHEUS_MULTIPROC_DIR is set."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def _is_loopback(request: HttpRequest) -> bool:
    # A request relayed by a proxy on this host looks local; it is not. Behind a trusted
    # proxy (MODELGATE_TRUSTED_PROXIES) the client's own address decides, as for lockouts.
    relayed = "HTTP_X_FORWARDED_FOR" in request.META or "HTTP_FORWARDED" in request.META
    if relayed and not is_trusted_proxy(request.META.get("REMOTE_ADDR", "")):
        return False
    try:
        return ipaddress.ip_address(client_address(request)).is_loopback
    except ValueError:
        return False


def metrics_allowed(request: HttpRequest) -> tuple[bool, int, str]:
    """Who may scrape: the bearer of MODELGATE_METRICS_TOKEN or a signed-in administrator;
    with no token configured, also anything on the loopback interface."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True, 200, ""
    expected = settings.MODELGATE_METRICS_TOKEN
    if expected:
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), expected):
            return True, 200, ""
        return False, 401, "Send Authorization: Bearer $MODELGATE_METRICS_TOKEN."
    if _is_loopback(request):
        return True, 200, ""
    return False, 403, "Metrics are for loopback only; set MODELGATE_METRICS_TOKEN to scrape."


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    allowed, status, message = metrics_allowed(request)
    if not allowed:
        response = HttpResponse(message + "\n", status=status, content_type="text/plain")
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body = _process_metrics() + generate_latest(_REGISTRY_METRICS)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
