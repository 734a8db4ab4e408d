"""Domain errors. Services raise these; `registry.api.errors` maps them to HTTP responses."""

from typing import Any


class RegistryError(Exception):
    code = "invalid"
    status = 400

    def __init__(self, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}


class InvalidInput(RegistryError):
    code, status = "invalid", 400


class InvalidPath(InvalidInput):
    """A user-supplied file path that could escape, or is malformed."""


class ChecksumMismatch(RegistryError):
    code, status = "checksum_mismatch", 400


class PermissionDenied(RegistryError):
    code, status = "permission_denied", 403


class NotFound(RegistryError):
    code, status = "not_found", 404


class Conflict(RegistryError):
    code, status = "conflict", 409


class PreconditionFailed(RegistryError):
    code, status = "precondition_failed", 412


class TooLarge(RegistryError):
    code, status = "too_large", 413


class InsufficientStorage(RegistryError):
    code, status = "insufficient_storage", 507


class GateFailed(RegistryError):
    code, status = "gate_failed", 409


class IncompleteBody(InvalidInput):
    """The request body ended before the declared number of bytes arrived."""
