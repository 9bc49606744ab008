"""Every error becomes {"error", "error_type"} with its status, in one place."""

from __future__ import annotations

import json

import pytest
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from app.errors import (
    InvalidInput,
    NotReady,
    OutOfMemory,
    PayloadTooLarge,
    QueueFull,
    RequestTimeout,
    Unauthorized,
    error_response,
)


def request(path: str = "/encode") -> Request:
    return Request({"type": "http", "method": "POST", "path": path, "headers": []})


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (InvalidInput("bad"), 422, "validation"),
        (Unauthorized("who"), 401, "unauthorized"),
        (QueueFull("full", retry_after_s=1), 429, "overloaded"),
        (NotReady("later", retry_after_s=1), 503, "unavailable"),
        (OutOfMemory("too big"), 507, "out_of_memory"),
        (HTTPException(404, "Not Found"), 404, "not_found"),
        (PayloadTooLarge("big"), 413, "payload_too_large"),
        (RequestTimeout("slow"), 408, "request_timeout"),
        (HTTPException(400, "There was an error parsing the body"), 422, "validation"),
        (ValueError("a bug"), 500, "internal"),
    ],
)
def test_each_error_maps_to_its_status_and_kind(error: Exception, status: int, kind: str) -> None:
    response = error_response(request(), error)
    body = json.loads(response.body)
    assert response.status_code == status
    assert body["error_type"] == kind
    assert set(body) == {"error", "error_type"}


def test_retry_after_is_sent_with_429() -> None:
    full = error_response(request(), QueueFull("full", retry_after_s=2))
    assert full.headers["retry-after"] == "2"


def test_validation_errors_read_as_one_message_per_field() -> None:
    error = RequestValidationError(
        [
            {"type": "value_error", "loc": ("body", "attention"), "msg": "Value error, no mode"},
            {"type": "json_invalid", "loc": ("body", 3), "msg": "x", "ctx": {"error": "Expecting"}},
        ]
    )
    body = json.loads(error_response(request(), error).body)
    assert body == {
        "error": "attention: no mode; body is not valid JSON: Expecting",
        "error_type": "validation",
    }


@pytest.mark.parametrize(
    ("error", "status", "error_class", "param"),
    [
        (InvalidInput("bad"), 422, "invalid_request_error", None),
        (Unauthorized("who"), 401, "authentication_error", None),
        (QueueFull("full", retry_after_s=1), 429, "rate_limit_error", None),
        (ValueError("a bug"), 500, "server_error", None),
        (
            RequestValidationError(
                [{"type": "missing", "loc": ("body", "input"), "msg": "Field required"}]
            ),
            422,
            "invalid_request_error",
            "input",
        ),
    ],
)
def test_openai_routes_answer_errors_in_openais_shape(error, status, error_class, param) -> None:
    response = error_response(request("/v1/embeddings"), error)
    body = json.loads(response.body)
    assert response.status_code == status
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == error_class
    assert body["error"]["param"] == param
    assert body["error"]["message"]
