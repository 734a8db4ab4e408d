"""/api/v1/models/"""

from django.db import transaction
from django.db.models import OuterRef, Prefetch, Q, Subquery
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from registry.errors import InvalidInput
from registry.models import Alias, ModelVersion, RegisteredModel
from registry.services import access
from registry.services import registered_models as service
from registry.services.queries import filter_tags
from registry.services.versions import LATEST

from ..serializers import (
    GrantSerializer,
    ModelCreateSerializer,
    ModelUpdateSerializer,
    RegisteredModelSerializer,
)
from .common import errors, json_object

MODEL_ORDERINGS = {"name", "-name", "created_at", "-created_at", "updated_at", "-updated_at"}


def model_queryset():
    aliases = Alias.objects.select_related("version").only("name", "model_id", "version__number")
    # `latest` is the newest ready version whose scan is clean: one subquery, not one per row.
    latest = ModelVersion.objects.filter(model=OuterRef("pk"), **LATEST).order_by("-number")
    return (
        RegisteredModel.objects.select_related("created_by", "team")
        .prefetch_related(Prefetch("aliases", queryset=aliases))
        .annotate(latest_number=Subquery(latest.values("number")[:1]))
    )


class ModelList(generics.GenericAPIView):
    serializer_class = RegisteredModelSerializer

    def get_ordering(self):
        ordering = self.request.query_params.get("ordering", "name")
        if ordering not in MODEL_ORDERINGS:
            raise InvalidInput(f"ordering must be one of {', '.join(sorted(MODEL_ORDERINGS))}.")
        return (ordering, "id" if not ordering.startswith("-") else "-id")

    def get_queryset(self):
        params = self.request.query_params
        queryset = access.visible(self.request.user, model_queryset(), "pk")
        team = params.get("team", "").strip()
        if team:
            queryset = queryset.filter(team__name=team)
        search = params.get("search", "").strip()
        if search:
            queryset = queryset.filter(Q(name__icontains=search) | Q(description__icontains=search))
        return filter_tags(queryset, "tags", params.getlist("tag"))

    @extend_schema(
        operation_id="models_list",
        parameters=[
            OpenApiParameter("search", str),
            OpenApiParameter("team", str),
            OpenApiParameter("tag", str, many=True),
            OpenApiParameter("ordering", str, enum=sorted(MODEL_ORDERINGS)),
            OpenApiParameter("cursor", str),
            OpenApiParameter("page_size", int),
        ],
        responses={200: RegisteredModelSerializer(many=True), **errors(400)},
    )
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        operation_id="models_create",
        request=ModelCreateSerializer,
        responses={201: RegisteredModelSerializer, **errors(400, 404, 409)},  # 404: no such team
    )
    def post(self, request):
        data = json_object(request)
        name = data.pop("name", None)
        unknown = set(data) - {"description", "tags", "team", "visibility", "primary_metric"}
        if unknown:
            raise InvalidInput(f"Unknown fields: {', '.join(sorted(unknown))}.")
        model = service.create_model(request.user, name, **data)
        model = model_queryset().get(pk=model.pk)
        return Response(self.get_serializer(model).data, status=status.HTTP_201_CREATED)


class ModelDetail(generics.GenericAPIView):
    serializer_class = RegisteredModelSerializer
    access_levels = {"DELETE": "admin"}

    def get_model(self, name):
        model = service.get_model(self.request.user, name)  # 404 unless readable
        return model_queryset().get(pk=model.pk)

    @extend_schema(
        operation_id="models_retrieve", responses={200: RegisteredModelSerializer, **errors(404)}
    )
    def get(self, request, name):
        return Response(self.get_serializer(self.get_model(name)).data)

    @extend_schema(
        operation_id="models_update",
        request=ModelUpdateSerializer,
        responses={200: RegisteredModelSerializer, **errors(400, 404)},
    )
    def patch(self, request, name):
        data = json_object(request)
        unknown = set(data) - {"description", "tags", "team", "visibility", "primary_metric"}
        if unknown:
            raise InvalidInput(f"These fields cannot be changed: {', '.join(sorted(unknown))}.")
        model = service.get_model(request.user, name)
        team, visibility = data.pop("team", None), data.pop("visibility", None)
        with transaction.atomic():  # all of the change, or none of it
            if data:
                service.update_model(model, request.user, **data)
            if visibility is not None:
                service.set_visibility(model, request.user, visibility)
            if team is not None:
                service.move_to_team(model, request.user, team)
        return Response(self.get_serializer(self.get_model(name)).data)

    @extend_schema(operation_id="models_destroy", responses={204: None, **errors(404, 409)})
    def delete(self, request, name):
        service.delete_model(service.get_model(request.user, name), request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ModelGrants(APIView):
    """Other teams' and users' access to one model; its maintainers change it."""

    access_levels = {"POST": access.WRITE}

    @extend_schema(
        operation_id="models_grants_list",
        responses={200: GrantSerializer(many=True), **errors(404)},
    )
    def get(self, request, name):
        model = service.get_model(request.user, name)
        return Response(GrantSerializer(service.grants(model, request.user), many=True).data)

    @extend_schema(
        operation_id="models_grants_create",
        request=GrantSerializer,
        responses={201: GrantSerializer, **errors(400, 404)},
    )
    def post(self, request, name):
        data = json_object(request)
        if set(data) - {"team", "user", "level"}:
            raise InvalidInput('A grant is {"team" or "user", "level"}.')
        model = service.get_model(request.user, name)
        grant = service.grant_access(
            model,
            request.user,
            data.get("level"),
            team=data.get("team"),
            username=data.get("user") or "",
        )
        return Response(GrantSerializer(grant).data, status=status.HTTP_201_CREATED)


class ModelGrantDetail(APIView):
    access_levels = {"DELETE": access.WRITE}

    @extend_schema(operation_id="models_grants_destroy", responses={204: None, **errors(404)})
    def delete(self, request, name, grant_id):
        model = service.get_model(request.user, name)
        service.revoke_access(model, request.user, grant_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
