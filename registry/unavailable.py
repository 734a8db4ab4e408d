"""A database that is down or restarting answers 503 with Retry-After on every door.

Django would answer 500: a fault of ours, logged as a bug, that clients do not retry. The
connection that failed is closed so the next request opens a fresh one (with
CONN_HEALTH_CHECKS, a pooled connection the restart killed is replaced before use).
"""

import contextlib
import logging

from django.db import InterfaceError, OperationalError, connection
from django.http import HttpResponse, JsonResponse

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
MESSAGE = "The database is unavailable right now; retry in a few seconds."


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not is_database_fault(exception):
            return None
        log.warning("database unavailable on %s %s: %s", request.method, request.path, exception)
        with contextlib.suppress(Exception):  # already broken; the next request reconnects
            connection.close()
        return unavailable(request.path)


def is_database_fault(exception: BaseException | None) -> bool:
    return isinstance(exception, OperationalError | InterfaceError)


def unavailable(path: str) -> HttpResponse:
    response = _answer(path)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _answer(path: str) -> HttpResponse:
    # Built by hand, no template: rendering one could touch the database again.
    if path.startswith("/api/2.0/"):
        return JsonResponse(
            {"error_code": "TEMPORARILY_UNAVAILABLE", "message": MESSAGE}, status=503
        )
    if path.startswith("/api/"):
        body = {"error": {"code": "unavailable", "message": MESSAGE, "details": {}}}
        return JsonResponse(body, status=503)
    return HttpResponse(
        f"<!doctype html><title>Unavailable</title><h1>Unavailable</h1><p>{MESSAGE}</p>",
        status=503,
    )
