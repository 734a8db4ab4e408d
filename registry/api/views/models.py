"""/api/v1/models/"""

from django.db.models import OuterRef, Prefetch, Q, Subquery
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response

from registry.errors import InvalidInput
from registry.models import Alias, ModelVersion, RegisteredModel
from registry.services import registered_models as service
from registry.services.queries import filter_tags
from registry.services.versions import LATEST

from ..serializers import ModelCreateSerializer, ModelUpdateSerializer, RegisteredModelSerializer
from .common import errors, json_object

MODEL_ORDERINGS = {"name", "-name", "created_at", "-created_at", "updated_at", "-updated_at"}


def model_queryset():
    aliases = Alias.objects.select_related("version").only("name", "model_id", "version__number")
    # `latest` is the newest ready version whose scan is clean: one subquery, not one per row.
    latest = ModelVersion.objects.filter(model=OuterRef("pk"), **LATEST).order_by("-number")
    return (
        RegisteredModel.objects.select_related("created_by")
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
        queryset = model_queryset()
        search = params.get("search", "").strip()
        if search:
            queryset = queryset.filter(Q(name__icontains=search) | Q(description__icontains=search))
        return filter_tags(queryset, "tags", params.getlist("tag"))

    @extend_schema(
        operation_id="models_list",
        parameters=[
            OpenApiParameter("search", str),
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
        responses={201: RegisteredModelSerializer, **errors(400, 409)},
    )
    def post(self, request):
        data = json_object(request)
        name = data.pop("name", None)
        unknown = set(data) - {"description", "tags", "owner_team", "primary_metric"}
        if unknown:
            raise InvalidInput(f"Unknown fields: {', '.join(sorted(unknown))}.")
        model = service.create_model(request.user, name, **data)
        model = model_queryset().get(pk=model.pk)
        return Response(self.get_serializer(model).data, status=status.HTTP_201_CREATED)


class ModelDetail(generics.GenericAPIView):
    serializer_class = RegisteredModelSerializer
    access_levels = {"DELETE": "admin"}

    def get_model(self, name):
        service.get_model(name)  # a clear 404
        return model_queryset().get(name=name)

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
        unknown = set(data) - {"description", "tags", "owner_team", "primary_metric"}
        if unknown:
            raise InvalidInput(f"These fields cannot be changed: {', '.join(sorted(unknown))}.")
        service.update_model(service.get_model(name), request.user, **data)
        return Response(self.get_serializer(self.get_model(name)).data)

    @extend_schema(operation_id="models_destroy", responses={204: None, **errors(404, 409)})
    def delete(self, request, name):
        service.delete_model(service.get_model(name), request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
