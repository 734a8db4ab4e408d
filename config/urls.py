from functools import cache

from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles import finders
from django.http import HttpResponse
from django.urls import include, path
from django.views.decorators.http import require_safe
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

from registry import observability
from registry.api.views import health
from webui.views.docs import RedocView, SwaggerView


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


urlpatterns = [
    path("favicon.ico", favicon, name="favicon"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", observability.metrics, name="metrics"),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/docs/", SwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/v1/redoc/", RedocView.as_view(url_name="schema"), name="redoc"),
    path("api/v1/", include("registry.api.urls")),
    path("api/2.0/mlflow/", include("registry.mlflow.urls")),
    path("api/3.0/mlflow/", include("registry.mlflow.permissions")),
    path("api/2.0/mlflow-artifacts/", include("registry.mlflow.artifacts")),
    path("admin/", admin.site.urls),
    path("", include("webui.urls")),
]
if settings.MODELGATE_OIDC_ISSUER:  # single sign-on (webui/oidc.py)
    urlpatterns.insert(0, path("oidc/", include("mozilla_django_oidc.urls")))
if not settings.MODELGATE_LOCAL_LOGIN:
    # No passwords: the admin's password form could never sign anyone in; the site's sign-in
    # page (single sign-on) brings staff back to ?next=/admin/… instead.
    admin_login = RedirectView.as_view(url="/login/", query_string=True)
    urlpatterns.insert(0, path("admin/login/", admin_login, name="admin-sso-login"))

handler404 = "webui.views.errors.not_found"
handler403 = "webui.views.errors.forbidden"
handler500 = "webui.views.errors.server_error"
