"""/api/v1/teams/: teams, their members and their service accounts."""

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from registry.errors import InvalidInput
from registry.models import Team
from registry.services import access, teams

from ..serializers import (
    MembershipSerializer,
    ServiceAccountSerializer,
    TeamSerializer,
    TeamUpdateSerializer,
)
from .common import errors, json_object


def team_body(user, team: Team) -> dict:
    """A team as its members (and admins) see it: with members and service accounts."""
    body = TeamSerializer(team).data
    if team.pk in access.team_roles(user) or access.is_admin(user):
        memberships = team.memberships.select_related("user__service_account")
        body["members"] = MembershipSerializer(memberships, many=True).data
        accounts = team.service_accounts.select_related("user")
        body["service_accounts"] = ServiceAccountSerializer(accounts, many=True).data
    body["models"] = list(
        access.visible_models(user).filter(team=team).values_list("name", flat=True)
    )
    return body


class TeamList(APIView):
    access_levels = {"POST": access.ADMIN}

    @extend_schema(operation_id="teams_list", responses={200: TeamSerializer(many=True)})
    def get(self, request):
        return Response(TeamSerializer(Team.objects.all(), many=True).data)

    @extend_schema(
        operation_id="teams_create",
        request=TeamSerializer,
        responses={201: TeamSerializer, **errors(400, 409)},
    )
    def post(self, request):
        data = json_object(request)
        if set(data) - {"name", "description"}:
            raise InvalidInput('The body is {"name": ..., "description"?: ...}.')
        team = teams.create_team(request.user, data.get("name"), data.get("description", ""))
        return Response(TeamSerializer(team).data, status=status.HTTP_201_CREATED)


class TeamDetail(APIView):
    access_levels = {"PATCH": access.WRITE, "DELETE": access.ADMIN}

    @extend_schema(operation_id="teams_retrieve", responses={200: TeamSerializer, **errors(404)})
    def get(self, request, team):
        return Response(team_body(request.user, teams.get_team(team)))

    @extend_schema(
        operation_id="teams_update",
        request=TeamUpdateSerializer,
        responses={200: TeamSerializer, **errors(400, 404)},
    )
    def patch(self, request, team):
        data = json_object(request)
        if set(data) - {"description"}:
            raise InvalidInput("Only 'description' can be changed.")
        found = teams.update_team(request.user, teams.get_team(team), data.get("description"))
        return Response(team_body(request.user, found))

    @extend_schema(operation_id="teams_destroy", responses={204: None, **errors(404, 409)})
    def delete(self, request, team):
        teams.delete_team(request.user, teams.get_team(team))
        return Response(status=status.HTTP_204_NO_CONTENT)


class TeamMember(APIView):
    """PUT sets a member's role (adding them), DELETE takes them out: maintainers, admins."""

    access_levels = {"PUT": access.WRITE, "DELETE": access.WRITE}

    @extend_schema(
        operation_id="teams_members_set",
        request=MembershipSerializer,
        responses={200: MembershipSerializer, **errors(400, 404)},
    )
    def put(self, request, team, username):
        data = json_object(request)
        if set(data) != {"role"}:
            raise InvalidInput('The body is {"role": "viewer"|"contributor"|"maintainer"}.')
        membership = teams.set_member(request.user, teams.get_team(team), username, data["role"])
        return Response(MembershipSerializer(membership).data)

    @extend_schema(operation_id="teams_members_remove", responses={204: None, **errors(404)})
    def delete(self, request, team, username):
        teams.remove_member(request.user, teams.get_team(team), username)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TeamServiceAccounts(APIView):
    access_levels = {"POST": access.WRITE}

    @extend_schema(
        operation_id="teams_service_accounts_create",
        request=ServiceAccountSerializer,
        responses={201: ServiceAccountSerializer, **errors(400, 404, 409)},
    )
    def post(self, request, team):
        data = json_object(request)
        if set(data) - {"name", "role", "description"}:
            raise InvalidInput('The body is {"name", "role"?, "description"?}.')
        account = teams.create_service_account(
            request.user,
            teams.get_team(team),
            data.get("name"),
            data.get("role", "contributor"),
            data.get("description", ""),
        )
        return Response(ServiceAccountSerializer(account).data, status=status.HTTP_201_CREATED)
