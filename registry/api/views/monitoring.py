"""/api/v1/monitoring/ — what serving processes send: prediction records and feedback;
and what monitoring makes of it: a version's windows, monitors and alerts.

Only ingest tokens may write records (the service checks), and they may do nothing else:
reads need the `read` scope, which an ingest token never carries.
The body is read here under MODELGATE_INGEST_MAX_BYTES rather than by DRF's parser, so an
oversized batch gets a clear 413 instead of Django's generic 400.
"""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from registry.errors import InvalidInput, TooLarge
from registry.models import Alert, Monitor
from registry.services import access, validation
from registry.services.monitoring import ingest, monitors, query

from ..serializers import (
    AlertSerializer,
    FeedbackBatchSerializer,
    IngestResultSerializer,
    MonitorSerializer,
    MonitorWriteSerializer,
    PredictionBatchSerializer,
    VersionMonitoringSerializer,
)
from .common import errors, json_object, model_and_version

READ_BLOCK = 1024 * 1024


class _RawJson:
    """Lets DRF skip body parsing: the view reads the body itself, under a size limit."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):  # pragma: no cover
        raise InvalidInput("The body is read by the view.")


def read_batch(request) -> object:
    """The JSON body, parsed (ingest.load_batch); or TooLarge past
    MODELGATE_INGEST_MAX_BYTES."""
    from django.conf import settings

    limit = settings.MODELGATE_INGEST_MAX_BYTES
    length = request.META.get("CONTENT_LENGTH") or ""
    too_large = TooLarge(
        f"The body is larger than {limit} bytes; send smaller batches.", {"max_bytes": limit}
    )
    if length.isascii() and length.isdigit() and int(length) > limit:
        raise too_large
    raw = request._request  # the WSGI stream, read without Django's in-memory body cap
    chunks, size = [], 0
    while block := raw.read(READ_BLOCK):
        chunks.append(block)
        size += len(block)
        if size > limit:
            raise too_large
    data = b"".join(chunks)
    del chunks
    return ingest.load_batch(data)


class PredictionIngest(APIView):
    access_levels = {"POST": None}  # an ingest token, checked by the service
    parser_classes = [_RawJson]

    @extend_schema(
        operation_id="monitoring_predictions_create",
        request=PredictionBatchSerializer,
        responses={202: IngestResultSerializer, **errors(400, 413)},
    )
    def post(self, request):
        result = ingest.ingest_predictions(request.auth, read_batch(request))
        return Response(result, status=status.HTTP_202_ACCEPTED)


class FeedbackIngest(APIView):
    access_levels = {"POST": None}
    parser_classes = [_RawJson]

    @extend_schema(
        operation_id="monitoring_feedback_create",
        request=FeedbackBatchSerializer,
        responses={202: IngestResultSerializer, **errors(400, 413)},
    )
    def post(self, request):
        result = ingest.ingest_feedback(request.auth, read_batch(request))
        return Response(result, status=status.HTTP_202_ACCEPTED)


# --- reading monitoring --------------------------------------------------------------


def _time(request, name: str):
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    at = validation.moment(raw)
    if at is None:
        raise InvalidInput(
            f"'{name}' must be an RFC 3339 time with a zone, e.g. 2025-01-02T03:04:05Z.",
            {"field": name},
        )
    return at


class VersionMonitoring(APIView):
    @extend_schema(
        operation_id="versions_monitoring",
        parameters=[
            OpenApiParameter("environment", str, description="Only this environment."),
            OpenApiParameter("since", str, description="RFC 3339; default: a day ago."),
            OpenApiParameter("until", str, description="RFC 3339; windows starting before."),
        ],
        responses={200: VersionMonitoringSerializer, **errors(400, 404)},
    )
    def get(self, request, name, ref):
        _, version = model_and_version(request, name, ref)
        environment = request.query_params.get("environment") or None
        return Response(
            query.version_monitoring(
                version,
                environment=environment,
                since=_time(request, "since"),
                until=_time(request, "until"),
            )
        )


MONITOR_LEVELS = {"POST": access.WRITE, "PATCH": access.WRITE, "DELETE": access.WRITE}


class MonitorList(APIView):
    access_levels = MONITOR_LEVELS

    @extend_schema(
        operation_id="monitors_list",
        parameters=[OpenApiParameter("model", str), OpenApiParameter("environment", str)],
        responses={200: MonitorSerializer(many=True)},
    )
    def get(self, request):
        found = access.visible(request.user, Monitor.objects.select_related("model", "created_by"))
        if request.query_params.get("model"):
            found = found.filter(model__name=request.query_params["model"])
        if request.query_params.get("environment"):
            found = found.filter(environment=request.query_params["environment"])
        return Response(MonitorSerializer(found, many=True).data)

    @extend_schema(
        operation_id="monitors_create",
        request=MonitorWriteSerializer,
        responses={201: MonitorSerializer, **errors(400)},
    )
    def post(self, request):
        monitor = monitors.create_monitor(request.user, json_object(request))
        return Response(MonitorSerializer(monitor).data, status=status.HTTP_201_CREATED)


class MonitorDetail(APIView):
    access_levels = MONITOR_LEVELS

    @extend_schema(
        operation_id="monitors_retrieve", responses={200: MonitorSerializer, **errors(404)}
    )
    def get(self, request, monitor_id):
        return Response(MonitorSerializer(monitors.get_monitor(request.user, monitor_id)).data)

    @extend_schema(
        operation_id="monitors_update",
        request=MonitorWriteSerializer,
        responses={200: MonitorSerializer, **errors(400, 404)},
    )
    def patch(self, request, monitor_id):
        monitor = monitors.update_monitor(
            monitors.get_monitor(request.user, monitor_id), request.user, json_object(request)
        )
        return Response(MonitorSerializer(monitor).data)

    @extend_schema(operation_id="monitors_destroy", responses={204: None, **errors(404)})
    def delete(self, request, monitor_id):
        monitors.delete_monitor(monitors.get_monitor(request.user, monitor_id), request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AlertList(generics.GenericAPIView):
    serializer_class = AlertSerializer

    def get_ordering(self):
        return ("-id",)

    @extend_schema(
        operation_id="alerts_list",
        parameters=[
            OpenApiParameter("state", str, enum=["firing", "resolved"]),
            OpenApiParameter("model", str),
            OpenApiParameter("environment", str),
        ],
        responses={200: AlertSerializer(many=True), **errors(400)},
    )
    def get(self, request):
        state = request.query_params.get("state")
        if state and state not in Alert.State.values:
            raise InvalidInput("'state' must be firing or resolved.", {"field": "state"})
        alerts = query.alert_history(
            request.user,
            model=request.query_params.get("model") or None,
            environment=request.query_params.get("environment") or None,
            limit=None,
        )
        if state:
            alerts = alerts.filter(state=state)
        page = self.paginate_queryset(alerts)
        return self.get_paginated_response(AlertSerializer(page, many=True).data)
