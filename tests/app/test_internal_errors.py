"""A bug answers 500 in the JSON error shape, is logged once, and the connection stays usable.

Before InternalErrorMiddleware, the handler for Exception ran inside Starlette's
ServerErrorMiddleware, which re-raises after answering: a second traceback in the log, and the
server closed the client's keep-alive connection.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from fastapi import FastAPI

from app.errors import install_error_handlers
from app.middleware import InternalErrorMiddleware


def app_with_a_bug() -> FastAPI:
    app = FastAPI()
    app.add_middleware(InternalErrorMiddleware)
    install_error_handlers(app)

    @app.get("/bug")
    async def bug() -> None:
        raise RuntimeError("a bug")

    @app.get("/fine")
    async def fine() -> dict[str, str]:
        return {"status": "fine"}

    return app


def test_a_bug_is_a_json_500_logged_once_and_nothing_propagates(caplog) -> None:
    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        # raise_app_exceptions: an exception escaping the app fails the test
        transport = httpx.ASGITransport(app=app_with_a_bug(), raise_app_exceptions=True)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/bug"), await client.get("/fine")

    with caplog.at_level(logging.ERROR):
        bug, fine = asyncio.run(scenario())
    assert bug.status_code == 500
    assert bug.json() == {"error": "internal error: RuntimeError", "error_type": "internal"}
    assert fine.status_code == 200
    tracebacks = [record for record in caplog.records if record.exc_info]
    assert len(tracebacks) == 1
    assert "unhandled error on GET /bug" in tracebacks[0].getMessage()


@pytest.mark.parametrize("path", ["/v1/bug"])
def test_openai_routes_get_the_500_in_openais_shape(path) -> None:
    app = app_with_a_bug()

    @app.get(path)
    async def bug() -> None:
        raise ValueError("another bug")

    async def scenario() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path)

    response = asyncio.run(scenario())
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
