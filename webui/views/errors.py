"""Error pages in the site's style (JSON under /api/)."""

import sys

from django.http import JsonResponse
from django.shortcuts import render

from registry.api.errors import error_body
from registry.unavailable import is_database_fault, unavailable


def _error(request, status: int, code: str, message: str):
    if request.path.startswith("/api/"):
        return JsonResponse(error_body(code, message), status=status)
    return render(
        request, "webui/error.html", {"status": status, "message": message}, status=status
    )


def not_found(request, exception=None):
    return _error(request, 404, "not_found", "Nothing lives at this address.")


def forbidden(request, exception=None):
    return _error(request, 403, "permission_denied", "You may not do this.")


def server_error(request):
    # A database fault raised outside a view (in a middleware) still answers 503.
    if is_database_fault(sys.exc_info()[1]):
        return unavailable(request.path)
    return _error(request, 500, "server_error", "Something broke on our side; it is logged.")
