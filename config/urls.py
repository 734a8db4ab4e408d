from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from registry import observability
from registry.api.views import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", observability.metrics, name="metrics"),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/v1/", include("registry.api.urls")),
    path("api/2.0/mlflow/", include("registry.mlflow.urls")),
    path("api/2.0/mlflow-artifacts/", include("registry.mlflow.artifacts")),
    path("admin/", admin.site.urls),
    path("", include("webui.urls")),
]

handler404 = "webui.views.errors.not_found"
handler403 = "webui.views.errors.forbidden"
handler500 = "webui.views.errors.server_error"
