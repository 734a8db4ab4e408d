"""Password sign-ins at every door (web UI, admin, token endpoint, MLflow Basic auth).

django-axes counts failures per username *and* client address (settings: AXES_*); past
AXES_FAILURE_LIMIT the pair is refused, right password included, until the cool-off has
passed since the last counted failure. A guesser therefore locks out only themselves: the
same user from another address, and other users, sign in as before.
"""

import math

from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_cool_off, get_credentials
from axes.models import AccessAttempt
from axes.signals import user_locked_out
from django.contrib.auth import authenticate as django_authenticate
from django.db import transaction
from django.db.models import Max
from django.dispatch import receiver
from django.utils import timezone

from registry.errors import RegistryError

from .events import record_event

LOCKED_OUT_EVENT = "auth.locked_out"


class LockedOut(RegistryError):
    code, status = "locked_out", 429

    def __init__(self, retry_after: int):
        minutes = max(1, math.ceil(retry_after / 60))
        super().__init__(
            f"Too many failed sign-ins for this user from your address; try again in "
            f"{minutes} minute(s), or use an API token.",
            {"retry_after": retry_after},
        )
        self.retry_after = retry_after


def authenticate(request, username: str, password: str):
    """The active user these credentials name, or None; LockedOut when axes refuses the
    pair (also on the failure that reaches the limit). `request` is Django's HttpRequest;
    the caller answers a LockedOut in its own format (AxesMiddleware then leaves it be)."""
    user = django_authenticate(request, username=username, password=password)
    if getattr(request, "axes_locked_out", False):
        request.modelgate_lockout_answered = True
        raise LockedOut(retry_after(request, username))
    if user is None or not user.is_active:
        return None
    # As AXES_RESET_ON_SUCCESS does for the UI's login(): a success forgets earlier slips.
    AxesProxyHandler.get_implementation().reset_user_attempts(request, get_credentials(username))
    return user


def not_a_password(request, credentials: dict | None) -> bool:
    """AXES_WHITELIST_CALLABLE: single sign-on's callback (it authenticates with the
    authorization code, its nonce and PKCE verifier, never a password) is not a guess to
    count or refuse; every attempt with a password still is."""
    return bool(credentials) and credentials.get("password") is None and "nonce" in credentials


def retry_after(request, username: str) -> int:
    """Seconds until the (username, address) pair may sign in again."""
    cool_off = get_cool_off(request)
    if cool_off is None:
        return 0
    last = AccessAttempt.objects.filter(
        username=username, ip_address=getattr(request, "axes_ip_address", None)
    ).aggregate(last=Max("attempt_time"))["last"]
    if last is None:
        return int(cool_off.total_seconds())
    return max(1, math.ceil((last + cool_off - timezone.now()).total_seconds()))


@receiver(user_locked_out, dispatch_uid="modelgate-audit-lockout")
def audit_lockout(sender, request, username, ip_address, **kwargs):
    # Axes signals again for every refused attempt during the lockout; only the failure that
    # was counted (and reached the limit) carries a count: one event per lockout.
    if getattr(request, "axes_failures_since_start", None) is None:
        return
    with transaction.atomic():
        record_event(
            LOCKED_OUT_EVENT,
            None,
            data={
                "username": username or "",
                "client_address": ip_address or "",
                "path": request.path,
                "failures": request.axes_failures_since_start,
            },
        )
