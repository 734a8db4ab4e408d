"""/api/v1/environments/, promotions and their reviews."""

from django.db.models import Prefetch
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from registry.errors import InvalidInput
from registry.models import Alias, Environment, Promotion, Review
from registry.services import access, promotions

from ..serializers import (
    EnvironmentSerializer,
    EnvironmentWriteSerializer,
    PromotionRequestSerializer,
    PromotionSerializer,
    ReviewRequestSerializer,
)
from .common import errors, json_object, model_and_version


def promotion_queryset():
    return Promotion.objects.select_related(
        "model", "version", "environment", "requested_by", "previous_version"
    ).prefetch_related(Prefetch("reviews", queryset=Review.objects.order_by("at", "id")))


def live_context(items) -> dict:
    """Which version each (model, environment) of these promotions points at now."""
    pairs = {(p.model_id, p.environment.name) for p in items}
    aliases = Alias.objects.filter(
        model_id__in={m for m, _ in pairs}, name__in={e for _, e in pairs}
    ).select_related("version")
    return {"live": {(a.model_id, a.name): a.version.number for a in aliases}}


def promotion_body(promotion: Promotion) -> dict:
    promotion = promotion_queryset().get(pk=promotion.pk)
    return PromotionSerializer(promotion, context=live_context([promotion])).data


class EnvironmentList(APIView):
    access_levels = {"POST": "admin"}

    @extend_schema(
        operation_id="environments_list", responses={200: EnvironmentSerializer(many=True)}
    )
    def get(self, request):
        return Response(EnvironmentSerializer(Environment.objects.all(), many=True).data)

    @extend_schema(
        operation_id="environments_create",
        request=EnvironmentWriteSerializer,
        responses={201: EnvironmentSerializer, **errors(400, 409)},
    )
    def post(self, request):
        data = json_object(request)
        name = data.pop("name", None)
        environment = promotions.create_environment(request.user, name, data)
        return Response(EnvironmentSerializer(environment).data, status=status.HTTP_201_CREATED)


class EnvironmentDetail(APIView):
    access_levels = {"PATCH": "admin"}

    @extend_schema(
        operation_id="environments_retrieve", responses={200: EnvironmentSerializer, **errors(404)}
    )
    def get(self, request, environment):
        return Response(EnvironmentSerializer(promotions.get_environment(environment)).data)

    @extend_schema(
        operation_id="environments_update",
        request=EnvironmentWriteSerializer,
        responses={200: EnvironmentSerializer, **errors(400, 404)},
    )
    def patch(self, request, environment):
        env = promotions.update_environment(
            request.user, promotions.get_environment(environment), json_object(request)
        )
        return Response(EnvironmentSerializer(env).data)


class VersionPromotions(APIView):
    @extend_schema(
        operation_id="promotions_request",
        request=PromotionRequestSerializer,
        parameters=[OpenApiParameter("ref", str, OpenApiParameter.PATH)],
        responses={201: PromotionSerializer, **errors(400, 404, 409)},
    )
    def post(self, request, name, ref):
        _, version = model_and_version(request, name, ref)
        data = json_object(request)
        if set(data) - {"environment", "comment"} or not isinstance(data.get("environment"), str):
            raise InvalidInput('The body is {"environment": name, "comment"?: text}.')
        promotion = promotions.request_promotion(
            version, request.user, data["environment"], data.get("comment", "")
        )
        return Response(promotion_body(promotion), status=status.HTTP_201_CREATED)


class PromotionList(generics.GenericAPIView):
    serializer_class = PromotionSerializer

    def get_ordering(self):
        return ("-id",)

    def get_queryset(self):
        params = self.request.query_params
        queryset = access.visible(self.request.user, promotion_queryset())
        states = [s for s in params.getlist("state") if s]
        if states:
            if set(states) - set(Promotion.State.values):
                raise InvalidInput(f"state must be among {', '.join(Promotion.State.values)}.")
            queryset = queryset.filter(state__in=states)
        if params.get("model"):
            queryset = queryset.filter(model__name=params["model"])
        if params.get("environment"):
            queryset = queryset.filter(environment__name=params["environment"])
        if params.get("requested_by"):
            queryset = queryset.filter(requested_by__username=params["requested_by"])
        return queryset

    @extend_schema(
        operation_id="promotions_list",
        parameters=[
            OpenApiParameter("state", str, many=True, enum=Promotion.State.values),
            OpenApiParameter("model", str),
            OpenApiParameter("environment", str),
            OpenApiParameter("requested_by", str),
            OpenApiParameter("cursor", str),
            OpenApiParameter("page_size", int),
        ],
        responses={200: PromotionSerializer(many=True), **errors(400)},
    )
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        data = PromotionSerializer(page, many=True, context=live_context(page)).data
        return self.get_paginated_response(data)


class PromotionDetail(APIView):
    @extend_schema(
        operation_id="promotions_retrieve", responses={200: PromotionSerializer, **errors(404)}
    )
    def get(self, request, promotion_id):
        return Response(promotion_body(promotions.get_promotion(request.user, promotion_id)))


class PromotionReviews(APIView):
    access_levels = {"POST": "review"}

    @extend_schema(
        operation_id="promotions_review",
        request=ReviewRequestSerializer,
        responses={201: PromotionSerializer, **errors(400, 404, 409)},
    )
    def post(self, request, promotion_id):
        data = json_object(request)
        if set(data) - {"decision", "comment"}:
            raise InvalidInput('The body is {"decision": "approve"|"reject", "comment": text}.')
        promotion = promotions.review_promotion(
            promotions.get_promotion(request.user, promotion_id),
            request.user,
            data.get("decision"),
            data.get("comment"),
        )
        return Response(promotion_body(promotion), status=status.HTTP_201_CREATED)


class PromotionCancel(APIView):
    @extend_schema(
        operation_id="promotions_cancel",
        request=None,
        responses={200: PromotionSerializer, **errors(404, 409)},
    )
    def post(self, request, promotion_id):
        promotion = promotions.cancel_promotion(
            promotions.get_promotion(request.user, promotion_id), request.user
        )
        return Response(promotion_body(promotion))
