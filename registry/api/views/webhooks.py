"""/api/v1/webhooks/ (administrators only)."""

from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from registry.models import Webhook
from registry.services import webhooks

from ..serializers import (
    DeliverySerializer,
    WebhookCreatedSerializer,
    WebhookSerializer,
    WebhookWriteSerializer,
)
from .common import errors, json_object

ADMIN_ONLY = {"GET": "admin", "HEAD": "admin", "POST": "admin", "PATCH": "admin", "DELETE": "admin"}


class WebhookList(APIView):
    access_levels = ADMIN_ONLY

    @extend_schema(operation_id="webhooks_list", responses={200: WebhookSerializer(many=True)})
    def get(self, request):
        return Response(WebhookSerializer(Webhook.objects.all(), many=True).data)

    @extend_schema(
        operation_id="webhooks_create",
        request=WebhookWriteSerializer,
        responses={201: WebhookCreatedSerializer, **errors(400)},
    )
    def post(self, request):
        webhook = webhooks.create_webhook(request.user, json_object(request))
        return Response(WebhookCreatedSerializer(webhook).data, status=status.HTTP_201_CREATED)


class WebhookDetail(APIView):
    access_levels = ADMIN_ONLY

    @extend_schema(
        operation_id="webhooks_retrieve", responses={200: WebhookSerializer, **errors(404)}
    )
    def get(self, request, webhook_id):
        return Response(WebhookSerializer(webhooks.get_webhook(webhook_id)).data)

    @extend_schema(
        operation_id="webhooks_update",
        request=WebhookWriteSerializer,
        responses={200: WebhookSerializer, **errors(400, 404)},
    )
    def patch(self, request, webhook_id):
        webhook = webhooks.update_webhook(
            request.user, webhooks.get_webhook(webhook_id), json_object(request)
        )
        return Response(WebhookSerializer(webhook).data)

    @extend_schema(operation_id="webhooks_destroy", responses={204: None, **errors(404)})
    def delete(self, request, webhook_id):
        webhooks.delete_webhook(request.user, webhooks.get_webhook(webhook_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookDeliveries(generics.GenericAPIView):
    access_levels = ADMIN_ONLY
    serializer_class = DeliverySerializer

    def get_ordering(self):
        return ("-id",)

    @extend_schema(
        operation_id="webhooks_deliveries",
        responses={200: DeliverySerializer(many=True), **errors(404)},
    )
    def get(self, request, webhook_id):
        webhook = webhooks.get_webhook(webhook_id)
        page = self.paginate_queryset(webhook.deliveries.select_related("event"))
        return self.get_paginated_response(DeliverySerializer(page, many=True).data)
