"""The OpenAPI schema and its interactive page, behind the API key unless made public.

The page's scripts and styles (Swagger UI 5, which renders OpenAPI 3.1) are served from the
`fastapi-swagger` package, not a CDN, so /docs works on a machine without internet. They are
the same public files for everyone, so they need no key.
"""

from __future__ import annotations

import functools
from importlib import resources

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response

from app.deps import check_api_key
from app.errors import NotFound

router = APIRouter(include_in_schema=False)
ASSETS = {
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}


@router.get("/openapi.json", dependencies=[Depends(check_api_key)])
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs", dependencies=[Depends(check_api_key)])
async def docs(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=f"{request.app.title} - docs",
        swagger_js_url="/docs/assets/swagger-ui-bundle.js",
        swagger_css_url="/docs/assets/swagger-ui.css",
        swagger_favicon_url="/docs/assets/favicon-32x32.png",
    )


@router.get("/docs/assets/{name}")
async def asset(name: str) -> Response:
    if name not in ASSETS:
        raise NotFound(f"no asset {name!r}")
    headers = {"Cache-Control": "public, max-age=86400"}
    return Response(_asset_bytes(name), media_type=ASSETS[name], headers=headers)


@functools.cache
def _asset_bytes(name: str) -> bytes:
    """Read from the package once (a few hundred kB), not on every request."""
    return resources.files("fastapi_swagger.resources").joinpath(name).read_bytes()
