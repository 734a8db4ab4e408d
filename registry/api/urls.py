from django.urls import path

from .views import (
    aliases,
    auth,
    events,
    models,
    monitoring,
    promotions,
    teams,
    versions,
    webhooks,
)

app_name = "api"

version = "models/<str:name>/versions/<str:ref>/"

urlpatterns = [
    path("auth/tokens/", auth.TokenList.as_view(), name="tokens"),
    path("auth/tokens/<int:token_id>/", auth.TokenDetail.as_view(), name="token"),
    path("me/", auth.Me.as_view(), name="me"),
    path("admin/rescan/", versions.Rescan.as_view(), name="admin-rescan"),
    path("models/", models.ModelList.as_view(), name="models"),
    path("models/<str:name>/", models.ModelDetail.as_view(), name="model"),
    path("models/<str:name>/grants/", models.ModelGrants.as_view(), name="model-grants"),
    path(
        "models/<str:name>/grants/<int:grant_id>/",
        models.ModelGrantDetail.as_view(),
        name="model-grant",
    ),
    path("models/<str:name>/versions/", versions.VersionList.as_view(), name="versions"),
    path(version, versions.VersionDetail.as_view(), name="version"),
    path(version + "finalize/", versions.VersionFinalize.as_view(), name="version-finalize"),
    path(version + "archive/", versions.VersionArchive.as_view(), name="version-archive"),
    path(version + "package/", versions.VersionPackage.as_view(), name="version-package"),
    path(version + "files/<path:path>", versions.VersionFileView.as_view(), name="version-file"),
    path("models/<str:name>/aliases/", aliases.AliasList.as_view(), name="aliases"),
    path("models/<str:name>/aliases/<str:alias>/", aliases.AliasDetail.as_view(), name="alias"),
    path(
        version + "promotions/", promotions.VersionPromotions.as_view(), name="version-promotions"
    ),
    path("environments/", promotions.EnvironmentList.as_view(), name="environments"),
    path(
        "environments/<str:environment>/",
        promotions.EnvironmentDetail.as_view(),
        name="environment",
    ),
    path("promotions/", promotions.PromotionList.as_view(), name="promotions"),
    path("promotions/<int:promotion_id>/", promotions.PromotionDetail.as_view(), name="promotion"),
    path(
        "promotions/<int:promotion_id>/reviews/",
        promotions.PromotionReviews.as_view(),
        name="promotion-reviews",
    ),
    path(
        "promotions/<int:promotion_id>/cancel/",
        promotions.PromotionCancel.as_view(),
        name="promotion-cancel",
    ),
    path("teams/", teams.TeamList.as_view(), name="teams"),
    path("teams/<str:team>/", teams.TeamDetail.as_view(), name="team"),
    path(
        "teams/<str:team>/members/<str:username>/",
        teams.TeamMember.as_view(),
        name="team-member",
    ),
    path(
        "teams/<str:team>/service-accounts/",
        teams.TeamServiceAccounts.as_view(),
        name="team-service-accounts",
    ),
    path("webhooks/", webhooks.WebhookList.as_view(), name="webhooks"),
    path("webhooks/<int:webhook_id>/", webhooks.WebhookDetail.as_view(), name="webhook"),
    path(
        "webhooks/<int:webhook_id>/deliveries/",
        webhooks.WebhookDeliveries.as_view(),
        name="webhook-deliveries",
    ),
    path("events/", events.EventList.as_view(), name="events"),
    path(
        "monitoring/predictions/",
        monitoring.PredictionIngest.as_view(),
        name="monitoring-predictions",
    ),
    path("monitoring/feedback/", monitoring.FeedbackIngest.as_view(), name="monitoring-feedback"),
    path(
        version + "monitoring/", monitoring.VersionMonitoring.as_view(), name="version-monitoring"
    ),
    path("monitors/", monitoring.MonitorList.as_view(), name="monitors"),
    path("monitors/<int:monitor_id>/", monitoring.MonitorDetail.as_view(), name="monitor"),
    path("alerts/", monitoring.AlertList.as_view(), name="alerts"),
]
