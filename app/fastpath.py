"""The inference routes' fast path: a request FastAPI would serve, served without its machinery.

For every short request FastAPI matches the route, solves the dependencies (the API key, the
ready service), checks the content type and validates the body: about a third of the event
loop's time per short text under load (`benchmarks/results/profiles/`), time the forward pass
then waits for on two cores. For a POST to an inference route, `FastPath` does those checks
directly and calls the route's own endpoint function.

It only ever takes a request it can settle without an error of its own. Anything else (no or
a wrong API key, a server not ready, a content type other than JSON or none, a body that is
not JSON or fails validation) goes on to FastAPI unchanged, which answers it as it always
did. Errors the endpoint raises are answered by `app.errors.error_response`, the function
FastAPI's handlers call. So both paths give the same answer to every request, from the same
code (tests/app/test_fastpath.py holds them side by side).
"""

from __future__ import annotations

import inspect
import json
import re
import secrets
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.params import Depends
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette._utils import get_route_path
from starlette.datastructures import State
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.deps import ServiceDep, check_api_key
from app.errors import ServiceError, error_response
from app.middleware import INFERENCE_PATHS, replay_first

# What FastAPI's exception handlers answer with error_response (app.errors.install_error_handlers).
_HANDLED = (ServiceError, RequestValidationError, HTTPException)


@dataclass(frozen=True)
class Endpoint:
    """An inference route's endpoint, `async def f(body, request, service)`, and its body model."""

    call: Any
    body: type[BaseModel]


def endpoints(routers: Iterable[APIRouter]) -> dict[str, Endpoint]:
    """The endpoints of the routers' POST inference routes, by path. Each must have exactly the
    dependencies the fast path checks itself (the API key, the ready service), so that it
    skips nothing FastAPI would run."""
    found = {}
    for route in (route for router in routers for route in router.routes):
        if not isinstance(route, APIRoute) or route.path not in INFERENCE_PATHS:
            continue
        if "POST" not in route.methods:
            continue
        dependencies = [d.dependency for d in route.dependencies if isinstance(d, Depends)]
        hints = typing.get_type_hints(route.endpoint, include_extras=True)
        parameters = list(inspect.signature(route.endpoint).parameters)
        body = hints.get("body")
        if (
            dependencies != [check_api_key]
            or len(dependencies) != len(route.dependencies)
            or parameters != ["body", "request", "service"]
            or hints.get("request") is not Request
            or hints.get("service") != ServiceDep
            or not (inspect.isclass(body) and issubclass(body, BaseModel))
        ):
            raise TypeError(
                f"{route.path}: an inference route must be `async def f(body: Model, request: "
                "Request, service: ServiceDep)` behind check_api_key alone, for app.fastpath"
            )
        found[route.path] = Endpoint(route.endpoint, body)
    return found


class FastPath:
    """ASGI middleware, innermost: POST requests to the inference routes, validated and run
    directly when nothing about them needs FastAPI (see the module's docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        state: State,
        routes: dict[str, Endpoint],
        overrides: dict[Any, Any],
    ) -> None:
        self.app = app
        self.state = state  # the FastAPI app's: settings, lifecycle, service
        self.routes = routes
        self.overrides = overrides  # the app's dependency_overrides: while any, FastAPI serves

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or self.overrides:
            await self.app(scope, receive, send)
            return
        endpoint = self.routes.get(get_route_path(scope))  # the path the router matches
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        # The body was read whole by AdmissionMiddleware and comes in one message.
        message = await receive()
        body = self._valid_body(scope, message, endpoint.body)
        service = self._service()
        if body is None or service is None:
            await self.app(scope, replay_first(message, receive), send)
            return
        request = Request(scope, receive)
        try:
            response = await endpoint.call(body, request, service)
        except _HANDLED as error:
            response = error_response(request, error)
        await response(scope, receive, send)

    def _valid_body(self, scope: Scope, message: Message, model: type[BaseModel]) -> Any:
        """The validated body, or None when FastAPI should answer (not JSON, not valid)."""
        content_type = None
        authorization = None
        for name, value in scope["headers"]:  # the first of each, as Starlette's Headers
            if name == b"content-type" and content_type is None:
                content_type = value
            elif name == b"authorization" and authorization is None:
                authorization = value
        if content_type is None or not _is_json(content_type):
            return None  # FastAPI may still read JSON without a type: it decides
        if not self._authorized(scope, authorization):
            return None
        data = message.get("body", b"")
        if message["type"] != "http.request" or message.get("more_body") or not data:
            return None
        try:
            return model.model_validate(json.loads(data))
        except Exception:  # not JSON, not valid, nested too deep: FastAPI says which
            return None

    def _authorized(self, scope: Scope, authorization: bytes | None) -> bool:
        """check_api_key's rule, on the raw header; False sends the request on to FastAPI."""
        settings = self.state.settings
        if settings.api_key is None or scope["path"] in settings.public_routes:
            return True
        if authorization is None:
            return False
        # HTTPBearer's reading: "<scheme> <token>", the token stripped, neither empty
        scheme, _, credentials = authorization.decode("latin-1").partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != "bearer" or not credentials:
            return False
        expected = settings.api_key.get_secret_value().encode()
        return secrets.compare_digest(credentials.encode(), expected)

    def _service(self) -> Any:
        """The service when get_ready_service would return it, else None."""
        if self.state.lifecycle.state in ("loading", "failed"):
            return None
        return getattr(self.state, "service", None)


def _is_json(content_type: bytes) -> bool:
    """application/json or application/<token>+json, parameters aside: a strict subset of what
    FastAPI reads as JSON (anything odder goes on to FastAPI, which decides)."""
    kind = content_type.split(b";", 1)[0].strip().lower()
    return _JSON_TYPE.fullmatch(kind) is not None


_JSON_TYPE = re.compile(rb"application/(json|[a-z0-9.!#$&^_-]+\+json)")
