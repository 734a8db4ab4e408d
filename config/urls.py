from functools import cache

from django.contrib import admin
from django.contrib.staticfiles import finders
from django.http import HttpResponse
from django.urls import include, path
from django.views.decorators.http import require_safe
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from registry import observability
from registry.api.views import health


@cache
def _favicon_bytes() -> bytes:
    with open(finders.find("webui/favicon.svg"), "rb") as icon:
        return icon.read()


@require_safe
def favicon(request):
    """/favicon.ico, asked for by browsers and tools whatever the page links: the SVG icon
    itself (served here, not redirected, so it answers without collected static files)."""
    response = HttpResponse(_favicon_bytes(), content_type="image/svg+xml")
    response["Cache-Control"] = "public, max-age=86400"
    return response


class RedocView(SpectacularRedocView):
    """drf-spectacular's Redoc page, offline: our template has no Google Fonts, and this
    policy keeps Redoc's own sidebar logo (an <img> from Redocly's CDN, in every build) from
    being fetched; the rest of Redoc (styles inline, a blob: worker) runs unchanged."""

    template_name = "webui/redoc.html"
    POLICY = (
        "default-src 'self'; script-src 'self' 'unsafe-inline' blob:; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
        "worker-src 'self' blob:; connect-src 'self'"
    )

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Content-Security-Policy"] = self.POLICY
        return response


urlpatterns = [
    path("favicon.ico", favicon, name="favicon"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", observability.metrics, name="metrics"),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/v1/redoc/", RedocView.as_view(url_name="schema"), name="redoc"),
    path("api/v1/", include("registry.api.urls")),
    path("api/2.0/mlflow/", include("registry.mlflow.urls")),
    path("api/2.0/mlflow-artifacts/", include("registry.mlflow.artifacts")),
    path("admin/", admin.site.urls),
    path("", include("webui.urls")),
]

handler404 = "webui.views.errors.not_found"
handler403 = "webui.views.errors.forbidden"
handler500 = "webui.views.errors.server_error"
