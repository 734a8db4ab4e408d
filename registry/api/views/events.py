"""/api/v1/events/ — the audit log, newest first."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics

from registry.errors import InvalidInput
from registry.models import Event
from registry.services import access, validation

from ..serializers import EventSerializer
from .common import errors


def _moment(raw: str, field: str):
    value = validation.moment(raw.replace(" ", "+"))  # an unescaped "+" arrives as " "
    if value is None:
        raise InvalidInput(
            f"'{field}' must be an RFC 3339 time with a zone, e.g. 2026-01-31T12:00:00Z."
        )
    return value


class EventList(generics.GenericAPIView):
    serializer_class = EventSerializer

    def get_ordering(self):
        return ("-id",)

    def get_queryset(self):
        params = self.request.query_params
        queryset = access.visible_events(self.request.user, Event.objects.all())
        if params.get("model"):
            queryset = queryset.filter(model_name=params["model"])
        types = [t for t in params.getlist("type") if t]
        if types:
            queryset = queryset.filter(type__in=types)
        if params.get("actor"):
            queryset = queryset.filter(actor_name=params["actor"])
        if params.get("version"):
            if not (params["version"].isascii() and params["version"].isdigit()):
                raise InvalidInput("'version' must be a number.")
            queryset = queryset.filter(version_number=int(params["version"]))
        if params.get("since"):
            queryset = queryset.filter(at__gte=_moment(params["since"], "since"))
        if params.get("until"):
            queryset = queryset.filter(at__lt=_moment(params["until"], "until"))
        return queryset

    @extend_schema(
        operation_id="events_list",
        parameters=[
            OpenApiParameter("model", str),
            OpenApiParameter("type", str, many=True),
            OpenApiParameter("actor", str),
            OpenApiParameter("version", int),
            OpenApiParameter("since", str, description="RFC 3339"),
            OpenApiParameter("until", str, description="RFC 3339"),
            OpenApiParameter("cursor", str),
            OpenApiParameter("page_size", int),
        ],
        responses={200: EventSerializer(many=True), **errors(400)},
    )
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)
