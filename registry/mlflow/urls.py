"""Mounted at /api/2.0/mlflow/, the prefix `MlflowClient` uses (ajax-api is for MLflow's UI)."""

from django.urls import path, re_path

from . import tracking, views

urlpatterns = [
    path("registered-models/create", views.registered_model_create),
    path("registered-models/get", views.registered_model_get),
    path("registered-models/rename", views.registered_model_rename),
    path("registered-models/update", views.registered_model_update),
    path("registered-models/delete", views.registered_model_delete),
    path("registered-models/search", views.registered_model_search),
    path("registered-models/get-latest-versions", views.registered_model_latest),
    path("registered-models/set-tag", views.registered_model_set_tag),
    path("registered-models/delete-tag", views.registered_model_delete_tag),
    path("registered-models/alias", views.registered_model_alias),
    path("model-versions/create", views.model_version_create),
    path("model-versions/transition-stage", views.model_version_transition),
    path("model-versions/get", views.model_version_get),
    path("model-versions/update", views.model_version_update),
    path("model-versions/delete", views.model_version_delete),
    path("model-versions/search", views.model_version_search),
    path("model-versions/set-tag", views.model_version_set_tag),
    path("model-versions/delete-tag", views.model_version_delete_tag),
    path("model-versions/get-download-uri", views.model_version_download_uri),
    *tracking.urlpatterns,  # experiments, runs, logged models
    re_path(r"^.*$", views.not_served),
]
