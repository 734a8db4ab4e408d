"""Who may do what. Roles are Django groups; token scopes narrow what a role allows."""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

CONTRIBUTORS = "contributors"
REVIEWERS = "reviewers"

# The levels an endpoint can ask for, from least to most privileged.
READ, WRITE, REVIEW, ADMIN = "read", "write", "review", "admin"
ALL_SCOPES = (READ, WRITE, REVIEW, ADMIN)


def _groups(user) -> set[str]:
    cached = getattr(user, "_modelgate_groups", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        user._modelgate_groups = cached
    return cached


def role_scopes(user: AbstractBaseUser | AnonymousUser) -> set[str]:
    """The scopes a user's role grants: what any of their tokens may at most carry."""
    if not user or not user.is_authenticated or not user.is_active:
        return set()
    if user.is_staff or user.is_superuser:
        return set(ALL_SCOPES)
    scopes = {READ}
    groups = _groups(user)
    if CONTRIBUTORS in groups:
        scopes.add(WRITE)
    if REVIEWERS in groups:
        scopes.add(REVIEW)
    return scopes


def is_member(user, group: str) -> bool:
    return bool(user and user.is_authenticated and (group in _groups(user)))


def is_admin(user) -> bool:
    return bool(user and user.is_authenticated and (user.is_staff or user.is_superuser))


def user_groups(user) -> list[str]:
    return sorted(_groups(user)) if user and user.is_authenticated else []
