"""/api/v1/models/{name}/aliases/"""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from registry.errors import InvalidInput
from registry.models import Environment
from registry.services import aliases
from registry.services.registered_models import get_model

from ..serializers import AliasSerializer, AliasSetSerializer
from .common import errors, json_object


def _context() -> dict:
    return {"protected": set(Environment.objects.values_list("name", flat=True))}


class AliasList(APIView):
    @extend_schema(
        operation_id="aliases_list", responses={200: AliasSerializer(many=True), **errors(404)}
    )
    def get(self, request, name):
        model = get_model(request.user, name)
        queryset = model.aliases.select_related("version", "updated_by")
        return Response(AliasSerializer(queryset, many=True, context=_context()).data)


def _if_match(request) -> int | None:
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    value = raw.strip().strip('"')
    if not (value.isascii() and value.isdigit()):
        raise InvalidInput('If-Match must be the current version number, e.g. "3".')
    return int(value)


class AliasDetail(APIView):
    access_levels = {"DELETE": "write"}

    @extend_schema(
        operation_id="aliases_set",
        request=AliasSetSerializer,
        parameters=[OpenApiParameter("If-Match", str, OpenApiParameter.HEADER)],
        responses={200: AliasSerializer, **errors(400, 404, 409, 412)},
    )
    def put(self, request, name, alias):
        model = get_model(request.user, name)
        data = json_object(request)
        if set(data) != {"version"}:
            raise InvalidInput('The body must be {"version": n}.')
        moved = aliases.set_alias(
            model, request.user, alias, data["version"], expected_version=_if_match(request)
        )
        moved = model.aliases.select_related("version", "updated_by").get(pk=moved.pk)
        return Response(AliasSerializer(moved, context=_context()).data)

    @extend_schema(operation_id="aliases_delete", responses={204: None, **errors(404, 409)})
    def delete(self, request, name, alias):
        aliases.delete_alias(get_model(request.user, name), request.user, alias)
        return Response(status=status.HTTP_204_NO_CONTENT)
