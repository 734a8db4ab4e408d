"""Teams, their members and their service accounts.

Admins create teams; a team's maintainers (and admins) manage its members and service
accounts. Memberships read from the identity provider at sign-in (`source="sso"`) are
replaced at each sign-in; those granted here (`source="local"`) are left alone by it.
Every change is an audit event.
"""

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from registry.errors import Conflict, NotFound, PermissionDenied
from registry.models import ServiceAccount, Team, TeamMembership

from . import access, validation
from .events import record_event

Role = TeamMembership.Role
Source = TeamMembership.Source


def get_team(name: str) -> Team:
    team = Team.objects.filter(name=name).first() if isinstance(name, str) else None
    if team is None:
        raise NotFound(f"Team '{name}' does not exist.", {"team": name})
    return team


def may_manage(user, team: Team) -> bool:
    return access.is_admin(user) or access.team_roles(user).get(team.pk) == Role.MAINTAINER


def _require_manager(user, team: Team) -> None:
    if not may_manage(user, team):
        raise PermissionDenied(f"Only maintainers of team '{team.name}' or admins may do this.")


def create_team(user, name: str, description: str = "") -> Team:
    if not access.is_admin(user):
        raise PermissionDenied("Only an administrator may create teams.")
    name = validation.team_name(name)
    try:
        with transaction.atomic():
            team = Team.objects.create(
                name=name, description=validation.text(description, "description")
            )
            record_event("team.created", user, data={"team": name})
    except IntegrityError:
        raise Conflict(f"Team '{name}' already exists.", {"team": name}) from None
    return team


def update_team(user, team: Team, description: str) -> Team:
    _require_manager(user, team)
    with transaction.atomic():
        team.description = validation.text(description, "description")
        team.save(update_fields=["description"])
        record_event("team.updated", user, data={"team": team.name})
    return team


def delete_team(user, team: Team) -> None:
    if not access.is_admin(user):
        raise PermissionDenied("Only an administrator may delete teams.")
    with transaction.atomic():
        if team.models.exists():
            raise Conflict(
                f"Team '{team.name}' still owns models; move or delete them first.",
                {"models": list(team.models.values_list("name", flat=True)[:20])},
            )
        if team.experiments.exists():  # their runs may be what versions were made from
            raise Conflict(
                f"Team '{team.name}' still owns MLflow experiments; an experiment's runs feed "
                "versions' lineage, so the team stays while it has any.",
                {"experiments": list(team.experiments.values_list("name", flat=True)[:20])},
            )
        record_event("team.deleted", user, data={"team": team.name})
        team.delete()


def _user(username: str):
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise NotFound(f"User '{username}' does not exist.", {"user": username})
    return user


def set_member(actor, team: Team, username: str, role: str) -> TeamMembership:
    """Add someone to the team, or change their role."""
    _require_manager(actor, team)
    role = validation.choice(role, "role", Role.values)
    member = _user(username)
    with transaction.atomic():
        membership, created = TeamMembership.objects.select_for_update().get_or_create(
            team=team, user=member, defaults={"role": role}
        )
        if not created and membership.role == role and membership.source == Source.LOCAL:
            return membership
        before = None if created else membership.role
        membership.role, membership.source = role, Source.LOCAL
        membership.save()
        record_event(
            "team.member_added" if created else "team.member_changed",
            actor,
            data={"team": team.name, "user": username, "role": role, "before": before},
        )
    return membership


def remove_member(actor, team: Team, username: str) -> None:
    _require_manager(actor, team)
    member = _user(username)
    with transaction.atomic():
        deleted, _ = TeamMembership.objects.filter(team=team, user=member).delete()
        if not deleted:
            raise NotFound(f"'{username}' is not a member of team '{team.name}'.")
        record_event("team.member_removed", actor, data={"team": team.name, "user": username})


def sync_sso_memberships(user, wanted: dict[str, str]) -> None:
    """Make the user's identity-provider memberships exactly `wanted` ({team: role}), as
    read from their group claim at this sign-in; missing teams are created."""
    for name, role in wanted.items():
        validation.team_name(name)
        validation.choice(role, "role", Role.values)
    with transaction.atomic():
        current = {
            m.team.name: m
            for m in TeamMembership.objects.select_for_update()
            .filter(user=user)
            .select_related("team")
        }
        for name, membership in current.items():
            if membership.source == Source.SSO and name not in wanted:
                membership.delete()
                record_event(
                    "team.member_removed", user, data={"team": name, "user": user.username,
                                                       "source": Source.SSO}
                )  # fmt: skip
        for name, role in wanted.items():
            membership = current.get(name)
            if membership is not None and membership.source == Source.LOCAL:
                continue  # granted in Modelgate: the identity provider does not own it
            if membership is not None and membership.role == role:
                continue
            team, created = Team.objects.get_or_create(name=name)
            if created:
                record_event("team.created", user, data={"team": name, "source": Source.SSO})
            TeamMembership.objects.update_or_create(
                team=team, user=user, defaults={"role": role, "source": Source.SSO}
            )
            record_event(
                "team.member_changed" if membership else "team.member_added",
                user,
                data={"team": name, "user": user.username, "role": role, "source": Source.SSO,
                      "before": membership.role if membership else None},
            )  # fmt: skip
    user._modelgate_teams = None  # read again on the next check


def create_service_account(
    actor, team: Team, name: str, role: str = Role.CONTRIBUTOR, description: str = ""
) -> ServiceAccount:
    """A user without a password, owned by `team` (and a member of it with `role`), that
    acts through its tokens only. Its username is `<team>-<name>`."""
    _require_manager(actor, team)
    role = validation.choice(role, "role", Role.values)
    suffix = validation.team_name(name)
    username = f"{team.name}-{suffix}"[:150]
    User = get_user_model()
    with transaction.atomic():
        if User.objects.filter(username=username).exists():
            raise Conflict(f"A user '{username}' already exists.", {"user": username})
        user = User(username=username)
        user.set_unusable_password()
        user.save()
        account = ServiceAccount.objects.create(
            user=user,
            team=team,
            description=validation.text(description, "description"),
            created_by=actor if access.active(actor) else None,
        )
        TeamMembership.objects.create(team=team, user=user, role=role)
        record_event(
            "team.service_account_created",
            actor,
            data={"team": team.name, "user": username, "role": role},
        )
    return account


def service_account_for(actor, username: str) -> ServiceAccount:
    """A service account its team's maintainers (or an admin) may act for."""
    account = (
        ServiceAccount.objects.select_related("user", "team")
        .filter(user__username=username)
        .first()
    )
    if account is None or not may_manage(actor, account.team):
        raise NotFound(f"Service account '{username}' does not exist.", {"user": username})
    return account


def teams_of(user) -> list[Team]:
    return list(Team.objects.filter(pk__in=list(access.team_roles(user))))
