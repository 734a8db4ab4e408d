"""Server-rendered pages. They read through the same services as the API."""

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import render

from registry.api.errors import error_body
from registry.models import RegisteredModel


@login_required
def models_index(request):
    models = RegisteredModel.objects.prefetch_related("aliases__version").order_by("name")
    return render(request, "webui/models.html", {"models": models})


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
    return _error(request, 500, "server_error", "Something broke on our side; it is logged.")
