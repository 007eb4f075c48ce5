"""The error hierarchy shared by the API, the client and the CLI.

Every error carries a stable ``code`` (``"<area>/<reason>"``), an HTTP status and a
CLI exit code, so the same failure reads the same way over HTTP and in a terminal.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ExitCode:
    """Process exit codes of the ``modelyard`` command."""

    OK = 0
    SERVER_ERROR = 1
    USAGE = 2
    AUTH = 3
    NOT_FOUND = 4
    CONFLICT = 5


class ModelyardError(Exception):
    """Root of every error modelyard raises on purpose.

    Args:
        message: A sentence for a person: what went wrong and, where it helps, what to do.
        code: A stable machine-readable code; defaults to the class's ``default_code``.
        details: Extra structured facts (the offending field, the expected version, ...).
    """

    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = ExitCode.SERVER_ERROR
    default_code: ClassVar[str] = "internal/error"

    def __init__(
        self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details = details or {}

    def to_body(self) -> dict[str, Any]:
        """The DESIGN error shape: ``{"error": {"code", "message", "details"}}``."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class InvalidInputError(ModelyardError):
    http_status = 422
    exit_code = ExitCode.USAGE
    default_code = "request/invalid"


class AuthenticationError(ModelyardError):
    http_status = 401
    exit_code = ExitCode.AUTH
    default_code = "auth/unauthenticated"


class PermissionDeniedError(ModelyardError):
    http_status = 403
    exit_code = ExitCode.AUTH
    default_code = "auth/forbidden"


class NotFoundError(ModelyardError):
    http_status = 404
    exit_code = ExitCode.NOT_FOUND
    default_code = "resource/not_found"


class ConflictError(ModelyardError):
    http_status = 409
    exit_code = ExitCode.CONFLICT
    default_code = "resource/conflict"


class ServiceUnavailableError(ModelyardError):
    http_status = 503
    exit_code = ExitCode.SERVER_ERROR
    default_code = "server/unavailable"


class ConfigurationError(ModelyardError):
    http_status = 500
    exit_code = ExitCode.SERVER_ERROR
    default_code = "config/invalid"


_BY_STATUS: dict[int, type[ModelyardError]] = {
    400: InvalidInputError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: InvalidInputError,
    415: InvalidInputError,
    422: InvalidInputError,
    503: ServiceUnavailableError,
}


def error_from_response(status: int, body: object) -> ModelyardError:
    """Rebuild the typed error an API answer describes (used by the HTTP client)."""
    cls = _BY_STATUS.get(status, ModelyardError)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        details = err.get("details")
        return cls(
            str(err.get("message", "")),
            code=str(err.get("code", cls.default_code)),
            details=details if isinstance(details, dict) else {},
        )
    return cls(f"the server answered HTTP {status}", details={"body": str(body)[:500]})
