"""The service's errors and the one place that turns any of them into a JSON response.

Every error body is `{"error": message, "error_type": kind}`.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

logger = logging.getLogger("app")


class ServiceError(Exception):
    """Base of the errors a request can meet; subclasses fix the status and the kind."""

    status_code = 500
    error_type = "internal"

    def __init__(self, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class InvalidInput(ServiceError):
    status_code = 422
    error_type = "validation"


class Unauthorized(ServiceError):
    status_code = 401
    error_type = "unauthorized"


class RequestTimeout(ServiceError):
    """The client did not send its whole body in time."""

    status_code = 408
    error_type = "request_timeout"


class NotFound(ServiceError):
    status_code = 404
    error_type = "not_found"


class PayloadTooLarge(ServiceError):
    status_code = 413
    error_type = "payload_too_large"


class QueueFull(ServiceError):
    status_code = 429
    error_type = "overloaded"


class NotReady(ServiceError):
    status_code = 503
    error_type = "unavailable"


class OutOfMemory(ServiceError):
    """A single input that does not fit in device memory even alone."""

    status_code = 507
    error_type = "out_of_memory"


class ClientDisconnected(ServiceError):
    """The client went away before its result was ready; nobody reads this answer."""

    status_code = 499
    error_type = "client_closed_request"


# Statuses Starlette raises itself (routing), with the kind they get here.
_HTTP_ERROR_TYPES = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        if item.get("type") == "json_invalid":
            reason = item.get("ctx", {}).get("error", "")
            parts.append(f"body is not valid JSON: {reason}".rstrip(": "))
            continue
        location = ".".join(_field_path(item.get("loc", ())))
        message = str(item.get("msg", "invalid"))
        message = message.removeprefix("Value error, ")
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts) or "invalid request"


def error_response(request: Request, error: Exception) -> JSONResponse:
    """The one mapping from an exception to its status code and JSON body."""
    headers: dict[str, str] = {}
    if isinstance(error, ServiceError):
        status, kind, message = error.status_code, error.error_type, error.message
        if error.retry_after_s is not None:
            headers["Retry-After"] = str(error.retry_after_s)
        if isinstance(error, Unauthorized):
            headers["WWW-Authenticate"] = "Bearer"
    elif isinstance(error, RequestValidationError):
        status, kind, message = 422, "validation", _validation_message(error)
    elif isinstance(error, HTTPException) and error.status_code == 400:
        # FastAPI's answer to a body it cannot decode (not UTF-8, say): a validation error too.
        status, kind = 422, "validation"
        message = f"body could not be parsed as UTF-8 JSON: {error.detail}"
    elif isinstance(error, HTTPException):
        status = error.status_code
        kind = _HTTP_ERROR_TYPES.get(status, "http_error")
        message = str(error.detail)
        headers.update(error.headers or {})
    else:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        status, kind, message = 500, "internal", f"internal error: {type(error).__name__}"
    if request.url.path.startswith(OPENAI_PREFIX):
        body = {"error": _openai_error(status, kind, message, _first_field(error))}
    else:
        body = {"error": message, "error_type": kind}
    return JSONResponse(body, status, headers=headers)


# Routes under this prefix answer errors in OpenAI's shape, which its clients parse.
OPENAI_PREFIX = "/v1/"
_OPENAI_TYPES = {401: "authentication_error", 429: "rate_limit_error"}


def _openai_error(status: int, kind: str, message: str, param: str | None) -> dict[str, object]:
    """OpenAI's error object: `type` as OpenAI names the class of error, `code` longenc's kind."""
    if status >= 500:
        error_class = "server_error"
    else:
        error_class = _OPENAI_TYPES.get(status, "invalid_request_error")
    return {"message": message, "type": error_class, "param": param, "code": kind}


def _first_field(error: Exception) -> str | None:
    """The request field a validation error is about (OpenAI's `param`), when it names one."""
    if not isinstance(error, RequestValidationError):
        return None
    for item in error.errors():
        location = _field_path(item.get("loc", ()))
        if location:
            return location[0]
    return None


def _field_path(location: tuple) -> list[str]:
    """A validation error's location as the client's field names and indices: without "body",
    and without the names pydantic gives the branches of a union (`list[int]`, ...)."""
    return [
        str(part)
        for part in location
        if part != "body" and (isinstance(part, int) or str(part).isidentifier())
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Expected errors are answered by FastAPI's handlers; anything else by
    `app.middleware.InternalErrorMiddleware` (a handler for Exception would be Starlette's
    ServerErrorMiddleware, which re-raises after answering: a second traceback, and the
    client's keep-alive connection closed)."""
    for error_class in (ServiceError, RequestValidationError, HTTPException):
        app.add_exception_handler(error_class, error_response)
