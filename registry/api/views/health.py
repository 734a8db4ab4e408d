"""/healthz (the process answers) and /readyz (database, broker and storage answer)."""

import logging

from django.conf import settings
from django.db import connection
from django.http import JsonResponse

from registry.storage import ENCRYPTION_OFF_WARNING, get_store

log = logging.getLogger(__name__)


def healthz(request):
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_broker() -> None:
    from workers.celery import app

    with app.connection_for_write(url=settings.CELERY_BROKER_URL) as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


def _check_storage() -> str:
    store = get_store()
    info = store.put(_Empty())
    if not store.exists(info.sha256):
        raise OSError("the store does not keep what it is given")
    free = store.free_bytes()
    if free is not None and free < settings.MODELGATE_STORAGE_MIN_FREE_BYTES:
        # Still ready (reads work), but uploads will soon get 507s: an operator must act.
        return f"degraded: {free} bytes free"
    return "ok"


class _Empty:
    def read(self, size=-1) -> bytes:
        return b""


def readyz(request):
    checks, ok = {}, True
    for name, check in (
        ("database", _check_database),
        ("broker", _check_broker),
        ("storage", _check_storage),
    ):
        try:
            checks[name] = check() or "ok"
        except Exception as exc:
            log.warning("readiness check %s failed: %s", name, exc)
            checks[name], ok = f"error: {type(exc).__name__}", False
    body = {"status": "ok" if ok else "unavailable", "checks": checks}
    if not checks["storage"].startswith("error"):
        encrypted = get_store().encrypted
        body["encryption"] = "on" if encrypted else "off"
        if not encrypted:  # fine on a laptop, a finding anywhere else
            body["warnings"] = [ENCRYPTION_OFF_WARNING]
    return JsonResponse(body, status=200 if ok else 503)
