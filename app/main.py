"""The application factory and its lifespan: load, warm up, serve, drain."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import start_http_server

from app.batcher import Batcher, BatchLimits
from app.cpus import set_torch_threads
from app.errors import install_error_handlers
from app.fastpath import FastPath, endpoints
from app.lifecycle import Lifecycle
from app.metrics import Metrics
from app.middleware import AdmissionMiddleware, InternalErrorMiddleware
from app.openapi import install_openapi
from app.routes import docs, encode, openai, ops, tei
from app.service import EncodeService
from app.settings import Settings
from models import load_encoder

logger = logging.getLogger("app")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the encoder (a failure stops the server from starting), start the batcher, then warm
    up in the background while /health answers 503; on shutdown finish every queued input."""
    settings: Settings = app.state.settings
    threads = set_torch_threads(settings.cpu_threads)
    logger.info("torch threads: %d", threads)
    encoder = await asyncio.to_thread(
        load_encoder,
        path=settings.model_path,
        device=settings.device,
        dtype=settings.dtype,
        position_extension=settings.position_extension,
        graph_forward=settings.graph_forward,
    )
    logger.info(
        "loaded %s (dim %d) on %s, %s", encoder.name, encoder.dim, encoder.device, encoder.dtype
    )
    limits = BatchLimits(
        max_batch_tokens=settings.max_batch_tokens,
        max_batch_size=settings.max_batch_size,
        batch_wait_s=settings.batch_wait_ms / 1000,
        queue_size=settings.queue_size,
        max_batch_cost=settings.max_batch_cost,
        short_input_cost=settings.short_input_cost,
    )
    app.state.metrics.device = encoder.device
    batcher = Batcher(encoder, limits, app.state.metrics, settings.cpu_streams)
    batcher.start()
    service = EncodeService(encoder, batcher, settings, app.state.metrics)
    app.state.encoder, app.state.batcher, app.state.service = encoder, batcher, service
    warmup = asyncio.create_task(_warm_up(service, app.state.lifecycle, settings.warmup))
    metrics_server = None
    if settings.metrics_port is not None:
        # prometheus_client's own HTTP server, on a thread: /metrics without a key, for the
        # internal network only (as text-embeddings-inference serves metrics on a port apart).
        metrics_server, _ = start_http_server(
            settings.metrics_port, addr=settings.host, registry=app.state.metrics.registry
        )
        logger.info("metrics on %s:%d", settings.host, settings.metrics_port)
    try:
        yield
    finally:
        warmup.cancel()
        await app.state.lifecycle.drain()
        await batcher.close()
        service.close()
        if metrics_server is not None:
            metrics_server.shutdown()


async def _warm_up(service: EncodeService, lifecycle: Lifecycle, enabled: bool) -> None:
    try:
        if enabled:
            await service.warmup()
    except Exception as error:
        logger.exception("warm-up failed; the server stays unready")
        lifecycle.mark_failed(f"warm-up failed: {type(error).__name__}: {error}")
        return
    lifecycle.mark_ready()
    logger.info("ready")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The longenc FastAPI app; heavy objects are built in its lifespan."""
    settings = settings if settings is not None else Settings()
    app = FastAPI(
        title="longenc",
        summary="Long-text embeddings with per-request sparse attention",
        version="0.1.0",
        lifespan=lifespan,
        # served by app.routes.docs, behind the API key like every route but /health
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.lifecycle = Lifecycle()
    install_error_handlers(app)
    install_openapi(app)
    routers = (encode.router, openai.router, tei.router, ops.router, docs.router)
    for router in routers:
        app.include_router(router)
    # The last added runs first: admission sees every answer, the 408s, 413s and 500s included;
    # the fast path sees only admitted requests, with their bodies read.
    app.add_middleware(
        FastPath,
        state=app.state,
        routes=endpoints(routers),  # included above with no dependencies of their own
        overrides=app.dependency_overrides,
    )
    app.add_middleware(InternalErrorMiddleware)
    app.add_middleware(
        AdmissionMiddleware,
        lifecycle=app.state.lifecycle,
        metrics=app.state.metrics,
        max_bytes=settings.max_payload_bytes,
        body_timeout_s=settings.body_timeout_s,
    )
    return app
