"""Single sign-on's rules: who an identity provider's claims name, and what their groups give.

A sign-in's claims (the ID token's, with the userinfo endpoint's on top) name the user by
`preferred_username`, else `email`, else `sub`: the first that is a valid username. The
user is created at their first sign-in (without a usable password) and matched by that
username afterwards, so the identity provider must be the one who hands those names out.

The group claim (MODELGATE_OIDC_GROUPS_CLAIM) is read again at every sign-in and mapped by
MODELGATE_OIDC_GROUP_MAP (config/sso.py): the user's SSO team memberships become exactly
what it gives (teams.sync_sso_memberships; memberships granted in Modelgate stay), and the
Django groups the map names are added or taken away (others are left alone). Leaving a
group at the identity provider therefore takes the access away at the next sign-in.
"""

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.db import transaction

from config.sso import ROLES, Target

from . import teams
from .client_address import client_address
from .events import record_event

log = logging.getLogger(__name__)

SIGNED_IN_EVENT = "auth.signed_in"
USERNAME_CLAIMS = ("preferred_username", "email", "sub")
_valid_username = UnicodeUsernameValidator()


class Refused(Exception):
    """The identity provider vouched for someone this site does not let in."""


def username_from(claims: dict) -> str:
    for claim in USERNAME_CLAIMS:
        value = claims.get(claim)
        if not isinstance(value, str) or not 0 < len(value) <= 150:
            continue
        try:
            _valid_username(value)
        except ValidationError:
            continue
        return value
    raise Refused(f"none of {', '.join(USERNAME_CLAIMS)} is a usable username")


def idp_groups(claims: dict, claim: str) -> list[str]:
    """The group claim as a list of names; an identity provider may send one name alone."""
    value = claims.get(claim)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return sorted({group for group in value if isinstance(group, str) and group})


def what_groups_give(
    groups: list[str], group_map: dict[str, tuple[Target, ...]]
) -> tuple[dict[str, str], set[str]]:
    """({team: role}, {Django group}) that these IdP groups give; of several roles in one
    team, the highest."""
    team_roles: dict[str, str] = {}
    django_groups: set[str] = set()
    for group in groups:
        for target in group_map.get(group, ()):
            if target.group:
                django_groups.add(target.group)
            elif ROLES.index(target.role) >= ROLES.index(team_roles.get(target.team, "viewer")):
                team_roles[target.team] = target.role
    return team_roles, django_groups


def _profile(claims: dict) -> dict[str, str]:
    fields = {
        "email": claims.get("email"),
        "first_name": claims.get("given_name") or claims.get("name"),
        "last_name": claims.get("family_name"),
    }
    return {k: v[:150] for k, v in fields.items() if isinstance(v, str) and v}


def _sync_django_groups(user, wanted: set[str], managed: set[str]) -> tuple[list, list]:
    current = set(user.groups.filter(name__in=managed).values_list("name", flat=True))
    added, removed = sorted(wanted - current), sorted(current - wanted)
    for name in added:
        user.groups.add(Group.objects.get_or_create(name=name)[0])
    if removed:
        user.groups.remove(*Group.objects.filter(name__in=removed))
    user._modelgate_groups = None  # access.py caches them per request
    return added, removed


def sign_in(request, claims: dict):
    """The user these verified claims name, created or brought up to date, with their SSO
    memberships re-read; Refused if they may not sign in. Audited as `auth.signed_in`."""
    username = username_from(claims)
    groups = idp_groups(claims, settings.MODELGATE_OIDC_GROUPS_CLAIM)
    group_map = settings.MODELGATE_OIDC_GROUP_MAP
    team_roles, django_groups = what_groups_give(groups, group_map)
    managed = {t.group for targets in group_map.values() for t in targets if t.group}
    User = get_user_model()
    with transaction.atomic():
        user, created = User.objects.select_for_update().get_or_create(username=username)
        if not user.is_active:
            raise Refused(f"user {username!r} is deactivated")
        if created:
            user.set_unusable_password()  # signs in through the identity provider only
        for field, value in _profile(claims).items():
            setattr(user, field, value)
        user.save()
        added, removed = _sync_django_groups(user, django_groups, managed)
        teams.sync_sso_memberships(user, team_roles)
        record_event(
            SIGNED_IN_EVENT,
            user,
            data={
                "method": "sso",
                "user_created": created,
                "client_address": client_address(request),
                "idp_groups": [group for group in groups if group in group_map],
                "teams": team_roles,
                "groups_added": added,
                "groups_removed": removed,
            },
        )
    log.info("single sign-on: %s signed in (new: %s)", username, created)
    return user
