"""MLflow's error JSON and HTTP statuses, and the mapping from Modelgate's domain errors."""

from django.http import JsonResponse

from registry.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    RegistryError,
    TooLarge,
)

RESOURCE_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
RESOURCE_ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"
INVALID_PARAMETER_VALUE = "INVALID_PARAMETER_VALUE"
INVALID_STATE = "INVALID_STATE"
PERMISSION_DENIED = "PERMISSION_DENIED"
UNAUTHENTICATED = "UNAUTHENTICATED"
ENDPOINT_NOT_FOUND = "ENDPOINT_NOT_FOUND"
REQUEST_LIMIT_EXCEEDED = "REQUEST_LIMIT_EXCEEDED"

# As MLflow's own server answers them (mlflow.protos.databricks_pb2 / ERROR_CODE_TO_HTTP_STATUS).
STATUSES = {
    RESOURCE_DOES_NOT_EXIST: 404,
    RESOURCE_ALREADY_EXISTS: 400,
    INVALID_PARAMETER_VALUE: 400,
    INVALID_STATE: 400,
    PERMISSION_DENIED: 403,
    UNAUTHENTICATED: 401,
    ENDPOINT_NOT_FOUND: 404,
    REQUEST_LIMIT_EXCEEDED: 429,
}

# The native API's codes, sent alongside so one error envelope works for both doors.
NATIVE_CODES = {
    RESOURCE_DOES_NOT_EXIST: "not_found",
    RESOURCE_ALREADY_EXISTS: "conflict",
    INVALID_PARAMETER_VALUE: "invalid",
    INVALID_STATE: "conflict",
    PERMISSION_DENIED: "permission_denied",
    UNAUTHENTICATED: "not_authenticated",
    ENDPOINT_NOT_FOUND: "not_found",
    REQUEST_LIMIT_EXCEEDED: "throttled",
}


class MlflowError(Exception):
    def __init__(
        self,
        error_code: str,
        message: str,
        status: int | None = None,
        native_code: str | None = None,
    ):
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.status = status or STATUSES.get(error_code, 400)
        self.native_code = native_code
        self.headers: dict[str, str] = {}

    def response(self) -> JsonResponse:
        body = {
            "error_code": self.error_code,
            "message": self.message,
            "error": {
                "code": self.native_code
                or (
                    "method_not_allowed"
                    if self.status == 405
                    else NATIVE_CODES.get(self.error_code, "invalid")
                ),
                "message": self.message,
                "details": {},
            },
        }
        response = JsonResponse(body, status=self.status, headers=self.headers)
        if self.error_code == UNAUTHENTICATED:
            response["WWW-Authenticate"] = 'Bearer realm="modelgate", Basic realm="modelgate"'
        return response


def method_not_allowed(request) -> MlflowError:
    """405, with MLflow's ENDPOINT_NOT_FOUND code: the client then tries the call's other
    method (it does so for GetLatestVersions: POST first, then GET)."""
    return MlflowError(
        ENDPOINT_NOT_FOUND, f"{request.method} is not supported on {request.path}.", status=405
    )


def invalid(message: str) -> MlflowError:
    return MlflowError(INVALID_PARAMETER_VALUE, message)


def from_registry_error(error: RegistryError) -> MlflowError:
    """A domain error in MLflow's terms. Views map context-specific conflicts themselves."""
    if isinstance(error, NotFound):
        code = RESOURCE_DOES_NOT_EXIST
    elif isinstance(error, PermissionDenied):
        code = PERMISSION_DENIED
    elif isinstance(error, InvalidInput | TooLarge):
        code = INVALID_PARAMETER_VALUE
    elif isinstance(error, Conflict | PreconditionFailed):
        code = INVALID_STATE
    else:
        code = INVALID_PARAMETER_VALUE
    return MlflowError(code, error.message)
