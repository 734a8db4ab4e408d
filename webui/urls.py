"""The web UI's URL map. Each area's views live in webui/views/<area>.py."""

from django.contrib.auth import views as auth_views
from django.urls import path

from .views import browse, monitoring, reviews, settings_pages, signin, teams, upload, versions

app_name = "webui"

urlpatterns = [
    path("login/", signin.SignInView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # browse.py: models, model page, compare, audit log
    path("", browse.models_index, name="models"),
    path("models/new/", browse.model_create, name="model-create"),
    path("models/<str:name>/", browse.model_detail, name="model"),
    path("models/<str:name>/compare/", browse.compare, name="compare"),
    path("audit/", browse.audit_log, name="audit"),
    # teams.py: teams, and who may reach a model
    path("teams/", teams.team_index, name="teams"),
    path("teams/<str:name>/", teams.team_detail, name="team"),
    path("teams/<str:name>/change/", teams.team_change, name="team-change"),
    path("models/<str:name>/access/", teams.model_access, name="model-access"),
    # versions.py: the version page and its live status, requesting a promotion
    path("models/<str:name>/versions/<int:number>/", versions.version_detail, name="version"),
    path(
        "models/<str:name>/versions/<int:number>/status/",
        versions.version_status,
        name="version-status",
    ),
    path(
        "models/<str:name>/versions/<int:number>/promote/",
        versions.request_promotion,
        name="version-promote",
    ),
    # monitoring.py: a version's monitoring tab, a dashboard per environment, monitors
    path(
        "models/<str:name>/versions/<int:number>/monitoring/",
        monitoring.version_monitoring,
        name="version-monitoring",
    ),
    path("monitoring/", monitoring.monitoring_index, name="monitoring"),
    path(
        "environments/<str:name>/monitoring/",
        monitoring.environment_monitoring,
        name="environment-monitoring",
    ),
    path("models/<str:name>/monitors/", monitoring.monitor_create, name="monitor-create"),
    path("monitors/<int:monitor_id>/", monitoring.monitor_update, name="monitor-update"),
    path("monitors/<int:monitor_id>/delete/", monitoring.monitor_delete, name="monitor-delete"),
    # upload.py: the upload page (the browser then talks to the REST API)
    path("models/<str:name>/upload/", upload.upload_page, name="upload"),
    # reviews.py: the queue, the review page, deciding
    path("reviews/", reviews.queue, name="reviews"),
    path("promotions/<int:promotion_id>/", reviews.review_page, name="promotion"),
    path("promotions/<int:promotion_id>/review/", reviews.decide, name="promotion-review"),
    path(
        "promotions/<int:promotion_id>/status/", reviews.promotion_status, name="promotion-status"
    ),
    # settings_pages.py: tokens, webhooks, environments
    path("settings/tokens/", settings_pages.tokens, name="tokens"),
    path(
        "settings/tokens/<int:token_id>/revoke/", settings_pages.revoke_token, name="token-revoke"
    ),
    path("settings/webhooks/", settings_pages.webhooks, name="webhooks"),
    path("settings/webhooks/<int:webhook_id>/", settings_pages.webhook_detail, name="webhook"),
    path("settings/environments/", settings_pages.environments, name="environments"),
]
