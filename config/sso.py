"""Single sign-on (OpenID Connect) and the local-password switch, read from the environment.

Imported by config/settings.py, so nothing here may import models. A wrong setting stops
the process at start with ImproperlyConfigured naming the variable, not at the first login.

MODELGATE_OIDC_GROUP_MAP is a JSON object from identity-provider group names to one target
or a list of them:
  "<team>:<role>"  a membership of that team (created at first use), role viewer,
                   contributor or maintainer
  "@<group>"       the Django group of that name (e.g. "@reviewers")
e.g. {"fraud-devs": "fraud:contributor", "ml-leads": ["fraud:maintainer", "@reviewers"]}.
"""

import json
import re
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

# As registry.models.TEAM_NAME_PATTERN (tests/test_oidc.py checks they agree).
TEAM_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}\Z"
ROLES = ("viewer", "contributor", "maintainer")  # least to most
_GROUP_NAME = re.compile(r"^[\w.@+ -]{1,150}\Z")  # what Django's Group.name can hold

PASSWORD_BACKEND = "django.contrib.auth.backends.ModelBackend"
AXES_BACKEND = "axes.backends.AxesStandaloneBackend"
OIDC_BACKEND = "webui.oidc.OIDCBackend"


@dataclass(frozen=True)
class Target:
    """What one identity-provider group gives: a team role, or a Django group."""

    team: str = ""
    role: str = ""
    group: str = ""


def parse_target(text: str) -> Target:
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a string")
    if text.startswith("@"):
        if not _GROUP_NAME.match(text[1:]):
            raise ValueError(f"{text!r} does not name a Django group")
        return Target(group=text[1:])
    team, sep, role = text.partition(":")
    if not sep or role not in ROLES:
        raise ValueError(f"{text!r} is not <team>:<{'|'.join(ROLES)}> nor @<group>")
    if not re.match(TEAM_NAME_PATTERN, team):
        raise ValueError(
            f"{text!r}: team {team!r} must be 1-64 of a-z, 0-9 and '-', starting with a letter "
            "or digit"
        )
    return Target(team=team, role=role)


def parse_group_map(text: str) -> dict[str, tuple[Target, ...]]:
    """MODELGATE_OIDC_GROUP_MAP as {IdP group: targets}; ValueError says what is wrong."""
    if not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON ({error})") from None
    if not isinstance(raw, dict):
        raise ValueError("must be a JSON object of {identity-provider group: target(s)}")
    parsed = {}
    for idp_group, targets in raw.items():
        if not idp_group:
            raise ValueError("an identity-provider group name is empty")
        listed = targets if isinstance(targets, list) else [targets]
        if not listed:
            raise ValueError(f"{idp_group!r} maps to nothing")
        try:
            parsed[idp_group] = tuple(parse_target(target) for target in listed)
        except ValueError as error:
            raise ValueError(f"{idp_group!r}: {error}") from None
    return parsed


def env_on(value: str | None, default: bool) -> bool:
    if value is None or not value.strip():
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def from_env(environ) -> dict:
    """The settings single sign-on and MODELGATE_LOCAL_LOGIN decide, as {name: value}."""
    issuer = environ.get("MODELGATE_OIDC_ISSUER", "").strip().rstrip("/")
    local_login = env_on(environ.get("MODELGATE_LOCAL_LOGIN"), True)
    try:
        group_map = parse_group_map(environ.get("MODELGATE_OIDC_GROUP_MAP", ""))
    except ValueError as error:
        raise ImproperlyConfigured(
            f"MODELGATE_OIDC_GROUP_MAP: {error}. Example: "
            '{"fraud-devs": "fraud:contributor", "ml-leads": ["fraud:maintainer", "@reviewers"]}'
        ) from None
    settings = {
        "MODELGATE_OIDC_ISSUER": issuer,
        "MODELGATE_LOCAL_LOGIN": local_login,
        "MODELGATE_OIDC_GROUPS_CLAIM": environ.get("MODELGATE_OIDC_GROUPS_CLAIM", "").strip()
        or "groups",
        "MODELGATE_OIDC_GROUP_MAP": group_map,
        "OIDC_RP_CLIENT_ID": environ.get("MODELGATE_OIDC_CLIENT_ID", "").strip(),
        "OIDC_RP_CLIENT_SECRET": environ.get("MODELGATE_OIDC_CLIENT_SECRET", "").strip(),
        "OIDC_RP_SCOPES": " ".join(
            environ.get("MODELGATE_OIDC_SCOPES", "").split() or ["openid", "email", "profile"]
        ),
        # Empty: <the request's scheme and host>/oidc/callback/. Set it where Django sees
        # another scheme or host than the browser (a proxy that terminates TLS).
        "MODELGATE_OIDC_REDIRECT_URI": environ.get("MODELGATE_OIDC_REDIRECT_URI", "").strip(),
        # RS256 is OpenID Connect's default for ID tokens; HS256 (mozilla-django-oidc's
        # default) would check them with the client secret.
        "OIDC_RP_SIGN_ALGO": environ.get("MODELGATE_OIDC_SIGN_ALGO", "").strip() or "RS256",
    }
    if issuer:
        if not issuer.startswith(("https://", "http://")):
            raise ImproperlyConfigured("MODELGATE_OIDC_ISSUER must be an http(s) URL.")
        if not settings["OIDC_RP_CLIENT_ID"] or not settings["OIDC_RP_CLIENT_SECRET"]:
            raise ImproperlyConfigured(
                "MODELGATE_OIDC_ISSUER is set: MODELGATE_OIDC_CLIENT_ID and "
                "MODELGATE_OIDC_CLIENT_SECRET must be too."
            )
        redirect_uri = settings["MODELGATE_OIDC_REDIRECT_URI"]
        if redirect_uri and not redirect_uri.startswith(("https://", "http://")):
            raise ImproperlyConfigured("MODELGATE_OIDC_REDIRECT_URI must be an http(s) URL.")
        if "openid" not in settings["OIDC_RP_SCOPES"].split():
            raise ImproperlyConfigured("MODELGATE_OIDC_SCOPES must include 'openid'.")
    elif not local_login:
        raise ImproperlyConfigured(
            "MODELGATE_LOCAL_LOGIN=0 turns passwords off: set MODELGATE_OIDC_ISSUER (single "
            "sign-on), or nobody could sign in."
        )
    # The one switch for passwords: without ModelBackend no door (login form, admin, token
    # endpoint, MLflow Basic auth) can check one. Axes stays first either way (its checks
    # expect it); the OIDC backend only answers the callback's code.
    backends = [AXES_BACKEND]
    if local_login:
        backends.append(PASSWORD_BACKEND)
    if issuer:
        backends.append(OIDC_BACKEND)
    settings["AUTHENTICATION_BACKENDS"] = backends
    return settings
