"""The upload page. The browser hashes the files and then talks to the REST API itself:
declare the version, PUT each file in resumable chunks, finalize (see static upload.js).
"""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET

from registry.models import ModelVersion, RegisteredModel
from registry.services import access

# Must match the chunk size upload.js sends; shown on the page so people know.
CHUNK_MIB = 8


@login_required
@require_GET
@ensure_csrf_cookie
def upload_page(request: HttpRequest, name: str) -> HttpResponse:
    model = RegisteredModel.objects.filter(name=name).first()
    if model is None or not access.can(request.user, model, access.READ):
        raise Http404(f"Model '{name}' does not exist.")
    if not access.can(request.user, model, access.WRITE):
        raise PermissionDenied(f"You may not write to model '{model.name}'.")
    latest = (
        ModelVersion.objects.filter(model=model)
        .exclude(state=ModelVersion.State.UPLOADING)
        .order_by("-number")
        .first()
    )
    context = {
        "nav": "models",
        "model": model,
        "latest": latest,
        "chunk_mib": CHUNK_MIB,
        "api_model_url": reverse("api:model", kwargs={"name": model.name}),
        "api_versions_url": reverse("api:versions", kwargs={"name": model.name}),
        "version_page_prefix": reverse("webui:model", args=[model.name]) + "versions/",
    }
    return render(request, "webui/upload.html", context)
