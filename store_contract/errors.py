"""The edge's errors: each has a stable `code`, an HTTP status and a sentence people can read.

The same error becomes the bus reply `{"ok": false, "error": {...}}` and the HTTP body
`{"error": {...}}`; `EdgeError.to_dict()` is that one shape.
"""

from __future__ import annotations

from typing import Any


class StartupError(Exception):
    """Start-up cannot go on; the message is one line saying what to fix."""


class EdgeError(Exception):
    """Base of every error the edge answers to a device or an HTTP client."""

    code = "internal_error"
    status = 500
    default_message = "Something went wrong at the store server; please try again."

    def __init__(self, message: str | None = None, *, detail: dict[str, Any] | None = None,
                 code: str | None = None, status: int | None = None) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.detail = detail or {}
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail:
            body["detail"] = self.detail
        return body


class BadRequest(EdgeError):
    code = "bad_request"
    status = 400
    default_message = "The request could not be understood."


class Unauthorized(EdgeError):
    code = "unauthorized"
    status = 401
    default_message = "Please sign in."


class Forbidden(EdgeError):
    code = "forbidden"
    status = 403
    default_message = "This device or user may not do that."


class NotFound(EdgeError):
    code = "not_found"
    status = 404
    default_message = "Not found."


class Conflict(EdgeError):
    code = "conflict"
    status = 409
    default_message = "That conflicts with what is already there."


class Unavailable(EdgeError):
    code = "unavailable"
    status = 503
    default_message = "The store server is busy; please try again in a moment."
