"""/api/v1/monitoring/ — what serving processes send: prediction records and feedback.

Only ingest tokens may write here (the service checks), and they may do nothing else.
The body is read here under MODELGATE_INGEST_MAX_BYTES rather than by DRF's parser, so an
oversized batch gets a clear 413 instead of Django's generic 400.
"""

import json

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from registry.errors import InvalidInput, TooLarge
from registry.services.monitoring import ingest

from ..serializers import FeedbackBatchSerializer, IngestResultSerializer, PredictionBatchSerializer
from .common import errors

READ_BLOCK = 1024 * 1024


class _RawJson:
    """Lets DRF skip body parsing: the view reads the body itself, under a size limit."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):  # pragma: no cover
        raise InvalidInput("The body is read by the view.")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def read_batch(request) -> object:
    """The JSON body, or TooLarge past MODELGATE_INGEST_MAX_BYTES."""
    from django.conf import settings

    limit = settings.MODELGATE_INGEST_MAX_BYTES
    length = request.META.get("CONTENT_LENGTH") or ""
    too_large = TooLarge(
        f"The body is larger than {limit} bytes; send smaller batches.", {"max_bytes": limit}
    )
    if length.isdigit() and int(length) > limit:
        raise too_large
    raw = request._request  # the WSGI stream, read without Django's in-memory body cap
    chunks, size = [], 0
    while block := raw.read(READ_BLOCK):
        chunks.append(block)
        size += len(block)
        if size > limit:
            raise too_large
    try:
        return json.loads(b"".join(chunks), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"The body is not valid JSON: {exc}") from None


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
