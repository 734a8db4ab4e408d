"""Helpers shared by the API views."""

from drf_spectacular.utils import OpenApiResponse
from rest_framework.request import Request

from registry.errors import InvalidInput
from registry.services import access
from registry.services.registered_models import get_model
from registry.services.versions import resolve_version

from ..serializers import ErrorSerializer


def errors(*statuses: int) -> dict:
    """OpenAPI responses for the error statuses an operation can answer with."""
    always = {401, 403}
    return {s: OpenApiResponse(ErrorSerializer) for s in sorted(always | set(statuses))}


def json_object(request: Request) -> dict:
    data = request.data
    if not isinstance(data, dict):
        raise InvalidInput("The request body must be a JSON object.")
    return dict(data)


def model_and_version(request: Request, name: str, ref: str, level: str = access.READ):
    """The model (if the caller may act on it at `level`) and its version `ref`."""
    model = get_model(request.user, name, level)
    return model, resolve_version(model, ref)
