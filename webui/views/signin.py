"""The sign-in page: the password form unless MODELGATE_LOCAL_LOGIN=0, and a "Sign in with
single sign-on" button when MODELGATE_OIDC_ISSUER is set (webui/oidc.py does the rest)."""

from django.conf import settings
from django.contrib.auth import views as auth_views

# /login/?sso=… : where webui/oidc.py sends a sign-in that did not work out.
SSO_MESSAGES = {
    "failed": "Single sign-on did not sign you in. Try again, or ask an administrator.",
    "unavailable": "The identity provider cannot be reached right now. Try again later.",
}


def sign_in_options(request) -> dict:
    return {
        "sso_enabled": bool(settings.MODELGATE_OIDC_ISSUER),
        "local_login": settings.MODELGATE_LOCAL_LOGIN,
        "sso_error": SSO_MESSAGES.get(request.GET.get("sso", "")),
    }


class SignInView(auth_views.LoginView):
    template_name = "webui/login.html"

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), **sign_in_options(self.request)}
