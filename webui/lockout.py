"""What a person sees when axes refuses a sign-in at /login/ or /admin/login/ (the
AXES_LOCKOUT_CALLABLE): the sign-in page again, saying why and for how long, with 429."""

from django.contrib.auth.forms import AuthenticationForm
from django.shortcuts import render

from registry.services.signin import LockedOut, retry_after

from .views.signin import sign_in_options


def lockout_response(request, original_response=None, credentials=None):
    if getattr(request, "modelgate_lockout_answered", False):
        return original_response  # the token endpoint or MLflow answered in its own format
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    wait = retry_after(request, username)
    context = {
        "form": AuthenticationForm(request, initial={"username": username}),
        "next": request.POST.get("next", request.GET.get("next", "")),
        "locked_out": LockedOut(wait).message,
        **sign_in_options(request),
    }
    response = render(request, "webui/login.html", context, status=429)
    response["Retry-After"] = str(wait)
    return response
