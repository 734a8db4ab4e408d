from django.urls import path

from .views import aliases, auth, events, models, versions

app_name = "api"

version = "models/<str:name>/versions/<str:ref>/"

urlpatterns = [
    path("auth/tokens/", auth.TokenList.as_view(), name="tokens"),
    path("auth/tokens/<int:token_id>/", auth.TokenDetail.as_view(), name="token"),
    path("me/", auth.Me.as_view(), name="me"),
    path("models/", models.ModelList.as_view(), name="models"),
    path("models/<str:name>/", models.ModelDetail.as_view(), name="model"),
    path("models/<str:name>/versions/", versions.VersionList.as_view(), name="versions"),
    path(version, versions.VersionDetail.as_view(), name="version"),
    path(version + "finalize/", versions.VersionFinalize.as_view(), name="version-finalize"),
    path(version + "archive/", versions.VersionArchive.as_view(), name="version-archive"),
    path(version + "package/", versions.VersionPackage.as_view(), name="version-package"),
    path(version + "files/<path:path>", versions.VersionFileView.as_view(), name="version-file"),
    path("models/<str:name>/aliases/", aliases.AliasList.as_view(), name="aliases"),
    path("models/<str:name>/aliases/<str:alias>/", aliases.AliasDetail.as_view(), name="alias"),
    path("events/", events.EventList.as_view(), name="events"),
]
