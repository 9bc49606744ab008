"""The inference routes' fast path (app.fastpath): it answers every request exactly as FastAPI
does, serves the valid ones without FastAPI, and hands everything else to FastAPI.

Two real apps with the default model, one without the fast path, get the same requests; their
answers must match (status, JSON body, the headers clients read). A spy between the fast path
and FastAPI records which requests reached FastAPI.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.middleware import Middleware
from starlette.types import Receive, Scope, Send

from app.deps import ServiceDep, check_api_key
from app.fastpath import FastPath, endpoints
from app.main import create_app, lifespan
from app.middleware import INFERENCE_PATHS
from app.routes import encode, openai, tei
from app.schemas import EncodeRequest
from app.settings import Settings

KEY = "s3cret"
# The answer's headers a client may read; the timing headers differ from run to run.
COMPARED_HEADERS = ("content-type", "retry-after", "www-authenticate", "x-prompt-tokens")


class Spy:
    """Records the path of every request that reaches FastAPI."""

    def __init__(self, app, seen: list[str]) -> None:
        self.app, self.seen = app, seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(scope["path"])
        await self.app(scope, receive, send)


class Served:
    """One app (with or without the fast path) running its lifespan on a shared event loop."""

    def __init__(self, runner: asyncio.Runner, fast: bool) -> None:
        self.runner = runner
        self.app = create_app(Settings(api_key=KEY, warmup=False))
        self.reached_fastapi: list[str] = []
        if not fast:
            middleware = self.app.user_middleware
            self.app.user_middleware = [m for m in middleware if m.cls is not FastPath]
        # innermost: between the fast path and FastAPI
        self.app.user_middleware.append(Middleware(Spy, seen=self.reached_fastapi))
        self.stack = AsyncExitStack()
        runner.run(self.stack.enter_async_context(lifespan(self.app)))
        runner.run(self._until_ready())
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=True)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://test")

    async def _until_ready(self) -> None:
        while not self.app.state.lifecycle.ready:
            await asyncio.sleep(0.01)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.runner.run(self.client.post(path, **kwargs))

    def close(self) -> None:
        self.runner.run(self.client.aclose())
        self.runner.run(self.stack.aclose())


@pytest.fixture(scope="module")
def apps() -> Iterator[tuple[Served, Served]]:
    with asyncio.Runner() as runner:
        fast, plain = Served(runner, fast=True), Served(runner, fast=False)
        try:
            yield fast, plain
        finally:
            fast.close()
            plain.close()


def same_json(a: Any, b: Any) -> bool:
    """Equal JSON values, floats within float32 rounding (the two apps batch alike, but a
    different thread may run the forward pass)."""
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return a == b


AUTH = {"authorization": f"Bearer {KEY}"}
JSON = {**AUTH, "content-type": "application/json"}

# (path, headers, body bytes): served by the fast path
VALID = [
    ("/v1/embeddings", JSON, {"input": "hello world"}),
    ("/v1/embeddings", JSON, {"input": ["one", "two"], "dimensions": 8}),
    ("/v1/embeddings", JSON, {"input": "x", "encoding_format": "base64"}),
    ("/v1/embeddings", JSON, {"input": [101, 7592, 102]}),
    (
        "/v1/embeddings",
        {"authorization": f"bearer {KEY}", "content-type": "Application/JSON; charset=utf-8"},
        {"input": "scheme and type in any case"},
    ),
    ("/v1/embeddings", {**AUTH, "content-type": "application/vnd.api+json"}, {"input": "+json"}),
    ("/encode", JSON, {"inputs": ["a", "b"], "attention": {"mode": "sliding_window", "window": 4}}),
    ("/encode", JSON, {"inputs": "a b c d e f", "late_chunking": False, "pooling": "cls"}),
    ("/encode", JSON, {"inputs": "one. two. three.", "chunking": {"tokens": 3, "overlap": 1}}),
    ("/embed", JSON, {"inputs": ["x", "y"], "dimensions": 5}),
    ("/", JSON, {"inputs": "root"}),
    ("/embed_all", JSON, {"inputs": "token vectors"}),
    ("/embed_all", JSON, {"inputs": "streamed " * 300}),  # over 100,000 floats: streamed
    ("/v1/embeddings", {**JSON, "authorization": f"Bearer  {KEY} "}, {"input": "token stripped"}),
]

# Answered by FastAPI (the fast path hands them on), or by the endpoint with an error.
REFUSED = [
    ("/v1/embeddings", {"content-type": "application/json"}, {"input": "no key"}),
    ("/v1/embeddings", {"authorization": "Bearer wrong"}, {"input": "wrong key"}),
    ("/v1/embeddings", {"authorization": KEY}, {"input": "no scheme"}),
    ("/v1/embeddings", {"authorization": f"Basic {KEY}"}, {"input": "other scheme"}),
    ("/v1/embeddings", {"authorization": "Bearer "}, {"input": "empty token"}),
    ("/v1/embeddings", {"authorization": f"Bearer {KEY}x"}, {"input": "longer token"}),
    ("/v1/embeddings", JSON, b'{"input": '),
    ("/v1/embeddings", JSON, b"\xff\xfe not utf-8"),
    ("/v1/embeddings", JSON, b"[" * 100_000),
    ("/v1/embeddings", JSON, b""),
    ("/v1/embeddings", JSON, []),
    ("/v1/embeddings", JSON, {"input": 5}),
    ("/v1/embeddings", JSON, {"input": "x", "unknown": 1}),
    ("/v1/embeddings", JSON, {"input": "x", "attention": {"mode": "nope"}}),
    ("/v1/embeddings", {**AUTH, "content-type": "text/plain"}, {"input": "not JSON's type"}),
    ("/v1/embeddings", AUTH, {"input": "no content type (FastAPI's strict_content_type)"}),
    ("/v1/embeddings", {**AUTH, "content-type": "application/vnd/x+json"}, {"input": "2 slashes"}),
    ("/v1/embeddings", {**AUTH, "content-type": "application/json, text/x"}, {"input": "a list"}),
    ("/encode", {**AUTH, "content-type": "multipart/form-data"}, {"inputs": "x"}),
    ("/encode", JSON, {"inputs": []}),
    ("/embed", JSON, {"inputs": "x", "truncation_direction": "up"}),
]

# Valid bodies the endpoint refuses: the fast path runs them and answers the endpoint's error.
ENDPOINT_ERRORS = [
    ("/v1/embeddings", JSON, {"input": "x", "dimensions": 100_000}),
    ("/embed", JSON, {"inputs": "x", "dimensions": 100_000}),
    ("/v1/embeddings", JSON, {"input": ["x"] * 100_000}),
    ("/encode", JSON, {"inputs": "y " * 40_000}),
    ("/v1/embeddings", JSON, {"input": [[101, 10**9, 102]]}),
    ("/encode", JSON, {"inputs": "x", "late_chunking": True, "pooling": "cls"}),
    ("/encode", JSON, {"inputs": "x", "prompt_name": "no such prompt"}),
]


def content(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def answers(served: Served, path: str, headers: dict, body: Any) -> tuple[int, Any, dict]:
    served.reached_fastapi.clear()
    response = served.post(path, headers=headers, content=content(body))
    kept = {name: response.headers.get(name) for name in COMPARED_HEADERS}
    return response.status_code, response.json(), kept


@pytest.mark.parametrize(("path", "headers", "body"), VALID)
def test_valid_requests_are_answered_alike_without_fastapi(apps, path, headers, body) -> None:
    fast, plain = apps
    status, answer, kept = answers(fast, path, headers, body)
    assert fast.reached_fastapi == []
    expected = answers(plain, path, headers, body)
    assert plain.reached_fastapi == [path]
    assert status == 200
    assert (status, kept) == (expected[0], expected[2])
    assert same_json(answer, expected[1])


@pytest.mark.parametrize(("path", "headers", "body"), REFUSED)
def test_refused_requests_reach_fastapi_and_get_its_answer(apps, path, headers, body) -> None:
    fast, plain = apps
    got = answers(fast, path, headers, body)
    assert fast.reached_fastapi == [path]
    assert got == answers(plain, path, headers, body)
    assert got[0] in (401, 422)


@pytest.mark.parametrize(("path", "headers", "body"), ENDPOINT_ERRORS)
def test_endpoint_errors_are_answered_alike_without_fastapi(apps, path, headers, body) -> None:
    fast, plain = apps
    got = answers(fast, path, headers, body)
    assert fast.reached_fastapi == []
    assert got == answers(plain, path, headers, body)
    assert got[0] == 422


@contextmanager
def lifecycle_state(apps: tuple[Served, Served], state: str) -> Iterator[None]:
    """Both apps in `state` for the block, then ready again."""
    for served in apps:
        served.app.state.lifecycle.state = state
    try:
        yield
    finally:
        for served in apps:
            served.app.state.lifecycle.state = "ready"


def test_a_server_not_ready_is_answered_by_fastapi(apps) -> None:
    fast, plain = apps
    with lifecycle_state(apps, "loading"):
        got = answers(fast, "/v1/embeddings", JSON, {"input": "too early"})
        assert fast.reached_fastapi == ["/v1/embeddings"]
        assert got == answers(plain, "/v1/embeddings", JSON, {"input": "too early"})
        assert got[0] == 503


def test_the_fast_path_covers_every_inference_route() -> None:
    assert set(endpoints([encode.router, openai.router, tei.router])) == INFERENCE_PATHS


async def _needs_more(request: Request) -> None:
    """A dependency the fast path would not run."""


def test_a_route_with_another_dependency_is_refused() -> None:
    router = APIRouter(dependencies=[Depends(check_api_key), Depends(_needs_more)])

    @router.post("/encode")
    async def other(body: EncodeRequest, request: Request, service: ServiceDep) -> None:
        """A route the fast path would serve without running `_needs_more`."""

    with pytest.raises(TypeError, match="check_api_key alone"):
        endpoints([router])


def test_a_route_with_other_parameters_is_refused() -> None:
    router = APIRouter(dependencies=[Depends(check_api_key)])

    @router.post("/encode")
    async def other(body: EncodeRequest, request: Request, service: ServiceDep, n: int) -> None:
        """A query parameter the fast path would not read."""

    with pytest.raises(TypeError, match="async def f"):
        endpoints([router])


def test_create_app_installs_the_fast_path() -> None:
    app: FastAPI = create_app(Settings())
    assert FastPath in [m.cls for m in app.user_middleware]


def answers_with(served: Served, root_path: str, path: str) -> tuple[int, Any, list[str]]:
    """POST `path` through a transport that sets the ASGI root_path (as uvicorn --root-path)."""
    transport = httpx.ASGITransport(app=served.app, root_path=root_path)

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(path, headers=JSON, content=b'{"input": "rooted"}')

    served.reached_fastapi.clear()
    response = served.runner.run(post())
    return response.status_code, response.json(), list(served.reached_fastapi)


@pytest.mark.parametrize(
    ("root_path", "path", "status"),
    [("/api", "/api/v1/embeddings", 200), ("/v1", "/v1/embeddings", 404)],
)
def test_routes_are_matched_without_the_root_path_as_the_router_does(
    apps, root_path, path, status
) -> None:
    """Under a root path the router matches the path without it: /api/v1/embeddings is the
    embeddings route, and under /v1, /v1/embeddings is /embeddings, which does not exist."""
    fast, plain = apps
    got = answers_with(fast, root_path, path)
    assert got[:2] == answers_with(plain, root_path, path)[:2]
    assert got[0] == status
    assert got[2] == ([] if status == 200 else [path])


def test_dependency_overrides_send_every_request_to_fastapi(apps) -> None:
    """An override (tests, plug-ins) changes what FastAPI runs; the fast path steps aside."""
    fast, plain = apps
    for served in apps:
        served.app.dependency_overrides[check_api_key] = lambda: None
    try:
        unkeyed = {"content-type": "application/json"}
        got = answers(fast, "/v1/embeddings", unkeyed, {"input": "no key needed now"})
        assert fast.reached_fastapi == ["/v1/embeddings"]
        assert got[0] == 200
        assert (
            got[:2] == answers(plain, "/v1/embeddings", unkeyed, {"input": "no key needed now"})[:2]
        )
    finally:
        for served in apps:
            served.app.dependency_overrides.clear()


def test_draining_refuses_before_the_fast_path(apps) -> None:
    fast, plain = apps
    with lifecycle_state(apps, "draining"):
        got = answers(fast, "/v1/embeddings", JSON, {"input": "too late"})
        assert got == answers(plain, "/v1/embeddings", JSON, {"input": "too late"})
        assert got[0] == 503
        assert fast.reached_fastapi == []


def test_a_bug_in_the_endpoint_is_the_same_500_on_both_paths(apps, monkeypatch) -> None:
    fast, plain = apps

    async def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    for served in apps:
        monkeypatch.setattr(served.app.state.service, "run", broken)
    got = answers(fast, "/encode", JSON, {"inputs": "x"})
    assert fast.reached_fastapi == []
    assert got == answers(plain, "/encode", JSON, {"inputs": "x"})
    assert got[0] == 500
