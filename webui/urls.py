from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

app_name = "webui"

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(template_name="webui/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.models_index, name="models"),
]
