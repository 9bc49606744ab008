"""ASGI middleware: the request body limit; admission, in-flight count and metrics of inference."""

from __future__ import annotations

import time

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import NotReady, PayloadTooLarge, error_response
from app.lifecycle import Lifecycle
from app.metrics import NO_MODE, Metrics

INFERENCE_PATHS = frozenset({"/encode", "/v1/embeddings"})

# Keys of the per-request state (scope["state"], i.e. `request.state`) shared with the routes.
RECEIVED_AT = "received_at"  # time.perf_counter() when the request arrived
MODE = "mode"  # the resolved attention mode, set by the route once known


class InferenceTrafficMiddleware:
    """Admits inference requests: once draining has begun, a new one is answered 503 at once;
    one that arrived before is served to the end. Counts requests in flight (draining waits for
    them) and records longenc_requests_total{mode,status} and
    longenc_request_duration_seconds{mode} when each is answered."""

    def __init__(self, app: ASGIApp, lifecycle: Lifecycle, metrics: Metrics) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in INFERENCE_PATHS:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state[RECEIVED_AT] = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.lifecycle.enter()
        self.metrics.requests_in_flight.inc()
        try:
            if self.lifecycle.state == "draining":
                refusal = NotReady("the server is shutting down", retry_after_s=1)
                await error_response(Request(scope), refusal)(scope, receive, send_and_record)
            else:
                await self.app(scope, receive, send_and_record)
        finally:
            mode = state.get(MODE, NO_MODE)
            self.metrics.requests.labels(mode, str(status)).inc()
            elapsed = time.perf_counter() - state[RECEIVED_AT]
            self.metrics.request_duration.labels(mode).observe(elapsed)
            self.metrics.requests_in_flight.dec()
            self.lifecycle.leave()


class BodyLimitMiddleware:
    """Answers 413 for a body over `max_bytes`: at once from Content-Length, else as soon as the
    streamed (chunked) body passes the limit. Bodies under it are read whole, then replayed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left while sending; nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the disconnect
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = PayloadTooLarge(f"request body exceeds the limit of {self.max_bytes} bytes")
        await error_response(Request(scope), error)(scope, receive, send)
