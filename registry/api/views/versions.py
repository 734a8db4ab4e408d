"""/api/v1/models/{name}/versions/ — declare, upload, finalize, read, download."""

import contextlib

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from registry.errors import Conflict, InvalidInput, NotFound
from registry.models import ModelVersion
from registry.services import access, rescan, uploads, validation, versions
from registry.services.queries import (
    SUMMARY_FIELDS,
    attach_alias_names,
    filter_metrics,
    filter_tags,
)
from registry.services.registered_models import get_model

from ..auth import request_scopes
from ..downloads import blob_response
from ..parsers import StrictJSONParser
from ..serializers import (
    FileStatusSerializer,
    RescanQueuedSerializer,
    RescanRequestSerializer,
    VersionCreatedSerializer,
    VersionCreateSerializer,
    VersionDetailSerializer,
    VersionMultipartSerializer,
    VersionSummarySerializer,
    VersionUpdateSerializer,
    absolute,
)
from ..uploads import StoredBlob, StreamingMultiPartParser
from .common import errors, json_object, model_and_version

VERSION_ORDERINGS = {"number", "-number", "created_at", "-created_at", "updated_at", "-updated_at"}
REF_PARAM = OpenApiParameter(
    "ref",
    str,
    OpenApiParameter.PATH,
    description="A version number, '@alias' or 'latest' (the newest ready, clean version).",
)


def detail_response(request, version: ModelVersion) -> Response:
    """The version's detail as GET answers it, read afresh (after a change, too)."""
    version = versions.read_version(request.user, version.model.name, version.number)
    return Response(VersionDetailSerializer(version, context={"request": request}).data)


class VersionList(generics.GenericAPIView):
    serializer_class = VersionSummarySerializer
    parser_classes = [StrictJSONParser, StreamingMultiPartParser]

    def get_ordering(self):
        ordering = self.request.query_params.get("ordering", "-number")
        if ordering not in VERSION_ORDERINGS:
            raise InvalidInput(f"ordering must be one of {', '.join(sorted(VERSION_ORDERINGS))}.")
        return (ordering,) if "number" in ordering else (ordering, "-number")

    def get_queryset(self):
        params = self.request.query_params
        # The model's id, not a join on its name: Postgres then walks the (model, number)
        # index backwards and stops after one page, instead of sorting every version of
        # the model (10 ms at 10,000 versions, 0.1 ms this way).
        model = get_model(self.request.user, self.kwargs["name"])  # 404 unless readable
        queryset = (
            ModelVersion.objects.filter(model_id=model.pk)
            .select_related("model", "created_by")
            .only(*SUMMARY_FIELDS)
        )
        states = [s for s in params.getlist("state") if s]
        if states:
            invalid = set(states) - set(ModelVersion.State.values)
            if invalid:
                raise InvalidInput(f"Unknown state: {', '.join(sorted(invalid))}.")
            queryset = queryset.filter(state__in=states)
        alias = params.get("alias")
        if alias:
            queryset = queryset.filter(aliases__name=alias)
        queryset = filter_tags(queryset, "tags", params.getlist("tag"))
        return filter_metrics(queryset, params.getlist("metric"))

    @extend_schema(
        operation_id="versions_list",
        parameters=[
            OpenApiParameter("state", str, enum=ModelVersion.State.values),
            OpenApiParameter("tag", str, many=True, description="key:value"),
            OpenApiParameter("alias", str),
            OpenApiParameter("metric", str, many=True, description="e.g. accuracy>=0.9"),
            OpenApiParameter("ordering", str, enum=sorted(VERSION_ORDERINGS)),
            OpenApiParameter("cursor", str),
            OpenApiParameter("page_size", int),
        ],
        responses={200: VersionSummarySerializer(many=True), **errors(400, 404)},
    )
    def get(self, request, name):
        page = self.paginate_queryset(self.get_queryset())
        attach_alias_names(page)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        operation_id="versions_create",
        request={
            "application/json": VersionCreateSerializer,
            "multipart/form-data": VersionMultipartSerializer,
        },
        responses={201: VersionCreatedSerializer, **errors(400, 404, 413)},
    )
    def post(self, request, name):
        model = get_model(request.user, name)
        if request.content_type.startswith("multipart/"):
            version = self._create_from_multipart(request, model)
        else:
            version = versions.create_version(model, request.user, json_object(request))
        pending = version.files.filter(complete=False).order_by("path")
        body = {
            "version": version.number,
            "state": version.state,
            "uploads": [
                {
                    "path": f.path,
                    "url": absolute(
                        request,
                        "api:version-file",
                        name=model.name,
                        ref=str(version.number),
                        path=f.path,
                    ),
                }
                for f in pending
            ],
        }
        return Response(body, status=status.HTTP_201_CREATED)

    def _create_from_multipart(self, request, model) -> ModelVersion:
        raw = request.data.get("metadata") or "{}"
        metadata = validation.json_document(raw)
        if not isinstance(metadata, dict):
            raise InvalidInput("'metadata' must be a JSON object.")
        if "files" in metadata:
            raise InvalidInput("With multipart, send the files as 'files' parts, not metadata.")
        parts = request.FILES.getlist("files")
        if set(request.FILES) - {"files"}:
            raise InvalidInput("File parts must be named 'files'.")
        blobs = [(p.path, p.info) for p in parts if isinstance(p, StoredBlob)]
        return versions.create_version_from_blobs(model, request.user, metadata, blobs)


class VersionDetail(APIView):
    @extend_schema(
        operation_id="versions_retrieve",
        parameters=[REF_PARAM],
        responses={200: VersionDetailSerializer, **errors(400, 404)},
    )
    def get(self, request, name, ref):
        version = versions.read_version(request.user, name, ref)
        return Response(VersionDetailSerializer(version, context={"request": request}).data)

    @extend_schema(
        operation_id="versions_update",
        parameters=[REF_PARAM],
        request=VersionUpdateSerializer,
        responses={200: VersionDetailSerializer, **errors(400, 404)},
    )
    def patch(self, request, name, ref):
        _, version = model_and_version(request, name, ref)
        version = versions.update_version(version, request.user, json_object(request))
        return detail_response(request, version)


class VersionFinalize(APIView):
    @extend_schema(
        operation_id="versions_finalize",
        request=None,
        parameters=[REF_PARAM],
        responses={200: VersionDetailSerializer, **errors(400, 404, 409)},
    )
    def post(self, request, name, ref):
        _, version = model_and_version(request, name, ref)
        version = versions.finalize_version(version, request.user)
        return detail_response(request, version)


class VersionArchive(APIView):
    @extend_schema(
        operation_id="versions_archive",
        request=None,
        parameters=[REF_PARAM],
        responses={200: VersionDetailSerializer, **errors(400, 404, 409)},
    )
    def post(self, request, name, ref):
        _, version = model_and_version(request, name, ref)
        version = versions.archive_version(version, request.user)
        return detail_response(request, version)


class Rescan(APIView):
    """Admins re-judge stored versions under the current scanner and policy."""

    access_levels = {"POST": access.ADMIN}

    @extend_schema(
        operation_id="admin_rescan",
        request=RescanRequestSerializer,
        responses={202: RescanQueuedSerializer, **errors(400, 403, 404)},
    )
    def post(self, request):
        body = json_object(request)
        if set(body) - {"model"}:
            raise InvalidInput("The body is an object with an optional 'model'.")
        queued = rescan.request_rescan(request.user, body.get("model"))
        return Response({"queued": queued}, status=status.HTTP_202_ACCEPTED)


class _RawBody:
    """Lets DRF skip body parsing: the file view reads the stream itself."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):  # pragma: no cover
        raise InvalidInput("The file body is read as raw bytes.")


FILE_PATH_PARAM = OpenApiParameter(
    "path", str, OpenApiParameter.PATH, description="The file's relative path inside the version."
)
UPLOAD_HEADERS = [
    OpenApiParameter(
        "Content-Range",
        str,
        OpenApiParameter.HEADER,
        description="bytes START-END/TOTAL for a chunk",
    ),
]


ALLOW_QUARANTINED_PARAM = OpenApiParameter(
    "allow_quarantined",
    bool,
    description="Admins only: download a quarantined version's bytes anyway (audited).",
)


def downloadable(request, version: ModelVersion) -> None:
    asked = request.query_params.get("allow_quarantined", "").lower() in ("1", "true", "yes")
    # The admin scope of this request, not only an admin user: a read token stays a read token.
    flag = asked and access.ADMIN in request_scopes(request)
    versions.require_downloadable(version, request.user, allow_quarantined=flag)


class VersionFileView(APIView):
    """GET downloads, HEAD reports size or upload progress, PUT uploads (whole or chunks)."""

    parser_classes = [_RawBody]

    @extend_schema(
        operation_id="versions_files_download",
        parameters=[
            REF_PARAM,
            FILE_PATH_PARAM,
            ALLOW_QUARANTINED_PARAM,
            OpenApiParameter("Range", str, OpenApiParameter.HEADER),
        ],
        responses={
            (200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY),
            (206, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY),
            **errors(400, 403, 404, 416),
        },
    )
    def get(self, request, name, ref, path):
        _, version = model_and_version(request, name, ref)
        downloadable(request, version)
        vfile = uploads.get_file(version, path)
        if not vfile.complete:
            raise NotFound(f"File '{path}' has not been uploaded yet.", {"path": path})
        return blob_response(request, vfile.sha256, vfile.size, path.rsplit("/", 1)[-1])

    @extend_schema(exclude=True)
    def head(self, request, name, ref, path):
        _, version = model_and_version(request, name, ref)
        downloadable(request, version)
        vfile = uploads.get_file(version, path)
        if vfile.complete:
            response = blob_response(request, vfile.sha256, vfile.size, path.rsplit("/", 1)[-1])
        else:
            response = Response(status=status.HTTP_200_OK)
        response["Upload-Offset"] = str(vfile.received)
        response["Upload-Length"] = str(vfile.size)
        response["Upload-Complete"] = "true" if vfile.complete else "false"
        return response

    @extend_schema(
        operation_id="versions_files_upload",
        parameters=[REF_PARAM, FILE_PATH_PARAM, *UPLOAD_HEADERS],
        request={"application/octet-stream": OpenApiTypes.BINARY},
        responses={200: FileStatusSerializer, **errors(400, 404, 409, 413)},
    )
    def put(self, request, name, ref, path):
        _, version = model_and_version(request, name, ref)
        content_range = uploads.parse_content_range(request.headers.get("Content-Range"))
        length = request.META.get("CONTENT_LENGTH")
        if not length or not (length.isascii() and length.isdigit()):
            if request.headers.get("Transfer-Encoding"):
                raise InvalidInput(
                    "Send a Content-Length; chunked transfer encoding is not "
                    "supported for file bodies (use Content-Range chunks)."
                )
            length = "0"
        try:
            vfile = uploads.receive_file(
                version, request.user, path, request._request, int(length), content_range
            )
        except Exception as exc:
            _discard_body(request._request)
            if isinstance(exc, Conflict) and "received" in exc.details:
                return _with_offset(exc, exc.details["received"])
            raise
        data = {
            "path": vfile.path,
            "size": vfile.size,
            "received": vfile.received,
            "complete": vfile.complete,
            "sha256": vfile.sha256,
        }
        response = Response(data)
        response["Upload-Offset"] = str(vfile.received)
        return response


def _discard_body(request, piece: int = 1024 * 1024) -> None:
    """Read what is left of a body that an error (a full disk, a wrong offset) cut short.
    gunicorn closes a connection that has more than 64 KiB unread, without a `Connection:
    close` the client could see, so the client's next request (the HEAD that resumes the
    upload) would fail on it; the client sends the whole body anyway."""
    with contextlib.suppress(OSError, ValueError):  # the client went away: nothing to keep
        while request.read(piece):
            pass


def _with_offset(exc: Conflict, offset: int) -> Response:
    from ..errors import error_body

    response = Response(error_body(exc.code, exc.message, exc.details), status=exc.status)
    response["Upload-Offset"] = str(offset)
    return response


class VersionPackage(APIView):
    @extend_schema(
        operation_id="versions_package_download",
        parameters=[REF_PARAM, ALLOW_QUARANTINED_PARAM],
        responses={
            (200, "application/x-tar"): OpenApiResponse(OpenApiTypes.BINARY),
            **errors(400, 403, 404, 409),
        },
    )
    def get(self, request, name, ref):
        _, version = model_and_version(request, name, ref)
        downloadable(request, version)
        if version.package_state != "ready" or not version.package_sha256:
            raise Conflict(
                f"The package of version {version.number} is not ready ({version.package_state}).",
                {"state": version.package_state},
            )
        response = blob_response(
            request,
            version.package_sha256,
            version.package_size,
            f"{version.model.name}-{version.number}.tar",
        )
        response["Content-Type"] = "application/x-tar"
        return response
