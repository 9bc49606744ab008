"""ASGI middleware: reading request bodies within bounds, admitting and counting inference
requests, and answering unexpected errors."""

from __future__ import annotations

import asyncio
import logging
import time

from starlette._utils import get_route_path
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import NotReady, PayloadTooLarge, RequestTimeout, ServiceError, error_response
from app.lifecycle import Lifecycle
from app.metrics import NO_MODE, Metrics

logger = logging.getLogger("app")

# POST routes that run the model: admitted, counted in flight and recorded per mode and status.
INFERENCE_PATHS = frozenset({"/encode", "/v1/embeddings", "/embed", "/embed_all", "/"})

# Keys of the per-request state (scope["state"], i.e. `request.state`) shared with the routes.
RECEIVED_AT = "received_at"  # time.perf_counter() when the request arrived
MODE = "mode"  # the resolved attention mode, set by the route once known


class AdmissionMiddleware:
    """Every HTTP request, in order:

    1. its body is read whole, within `max_bytes` (413 at once from Content-Length, else as soon
       as the stream passes it) and within `body_timeout_s` (408): a slow or stalled upload
       never holds the server, and is not yet "in flight", so it never holds a drain;
    2. an inference request is refused 503 once draining has begun; one admitted before is
       served to the end, counted in flight (draining waits for it);
    3. each inference answer is recorded in longenc_requests_total{mode,status} and
       longenc_request_duration_seconds{mode}, the 408/413/503 refusals included.
    """

    def __init__(
        self,
        app: ASGIApp,
        lifecycle: Lifecycle,
        metrics: Metrics,
        max_bytes: int,
        body_timeout_s: float,
    ) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received_at = time.perf_counter()
        state = scope.setdefault("state", {})
        state[RECEIVED_AT] = received_at
        inference = scope["method"] == "POST" and get_route_path(scope) in INFERENCE_PATHS
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            body = await self._read_body(scope, receive)
        except ServiceError as refusal:
            await error_response(Request(scope), refusal)(scope, receive, send_and_record)
            if inference:
                self._record(state, status, received_at)
            return
        if body is None:
            return  # the client left while sending; nobody to answer, nothing was accepted
        # the app gets the body already read, then waits for the disconnect
        replay = replay_first({"type": "http.request", "body": body, "more_body": False}, receive)
        if not inference:
            await self.app(scope, replay, send)
            return
        self.lifecycle.enter()
        self.metrics.requests_in_flight.inc()
        try:
            if self.lifecycle.state == "draining":
                refusal = NotReady("the server is shutting down", retry_after_s=1)
                await error_response(Request(scope), refusal)(scope, replay, send_and_record)
            else:
                await self.app(scope, replay, send_and_record)
        finally:
            self._record(state, status, received_at)
            self.metrics.requests_in_flight.dec()
            self.lifecycle.leave()

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None if the client disconnected; raises PayloadTooLarge or
        RequestTimeout."""
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise PayloadTooLarge(f"request body exceeds the limit of {self.max_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            # one timer for the whole body (asyncio.wait_for would start a task per message)
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise PayloadTooLarge(
                            f"request body exceeds the limit of {self.max_bytes} bytes"
                        )
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise RequestTimeout(
                f"the request body was not received within {self.body_timeout_s:g} s"
            ) from None

    def _record(self, state: dict, status: int, received_at: float) -> None:
        mode = state.get(MODE, NO_MODE)
        self.metrics.requests.labels(mode, str(status)).inc()
        self.metrics.request_duration.labels(mode).observe(time.perf_counter() - received_at)


def replay_first(first: Message, receive: Receive) -> Receive:
    """A receive that gives `first` (a message already read) once, then reads on."""
    given = False

    async def receive_again() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return first

    return receive_again


class InternalErrorMiddleware:
    """Answers an exception no handler took (a bug) with a 500 in the JSON error shape, logged
    once, and keeps the connection usable: it does not re-raise as Starlette's
    ServerErrorMiddleware does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as error:
            if started:  # too late for an error response: let the server close the connection
                raise
            await error_response(Request(scope), error)(scope, receive, send)
