"""Dependencies of the routes: settings, metrics, lifecycle, the ready service and the API key.

All are `async def`: FastAPI runs a plain `def` dependency on its thread pool, a thread hop per
dependency per request for what is an attribute read."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import NotReady, Unauthorized
from app.lifecycle import Lifecycle
from app.metrics import Metrics
from app.service import EncodeService
from app.settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_lifecycle(request: Request) -> Lifecycle:
    return request.app.state.lifecycle


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
LifecycleDep = Annotated[Lifecycle, Depends(get_lifecycle)]

_bearer = HTTPBearer(auto_error=False, description="the server's LONGENC_API_KEY, if one is set")


async def check_api_key(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Raise Unauthorized unless no key is configured, the route is one of
    `settings.public_routes`, or the bearer token matches the key."""
    if settings.api_key is None or request.url.path in settings.public_routes:
        return
    if credentials is None:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    expected = settings.api_key.get_secret_value().encode()
    if not secrets.compare_digest(credentials.credentials.encode(), expected):
        raise Unauthorized("invalid API key")


async def get_ready_service(request: Request, lifecycle: LifecycleDep) -> EncodeService:
    """The encode service, or NotReady while loading or after a failed warm-up. (Requests that
    arrive while draining are refused earlier, by InferenceTrafficMiddleware.)"""
    if lifecycle.state == "loading":
        raise NotReady("the model is still loading", retry_after_s=1)
    if lifecycle.state == "failed":
        raise NotReady(f"the server failed to start: {lifecycle.error}", retry_after_s=5)
    return request.app.state.service


ServiceDep = Annotated[EncodeService, Depends(get_ready_service)]
