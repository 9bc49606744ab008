"""Operations: /health, /info, /metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from app.attention import AUTO, attention_to_dict
from app.deps import LifecycleDep, MetricsDep, SettingsDep, check_api_key
from app.errors import NotReady
from app.metrics import CONTENT_TYPE
from app.schemas import ErrorResponse, HealthResponse, InfoResponse, ModeInfo
from sparse_core import MODES

router = APIRouter(tags=["operations"])


@router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "loading, failed or draining"}},
)
async def health(lifecycle: LifecycleDep) -> JSONResponse:
    """200 once the model is loaded and warmed up; 503 while loading, after a failure, or
    from the moment a shutdown begins."""
    body = HealthResponse(status=lifecycle.state, error=lifecycle.error)
    status = 200 if lifecycle.ready else 503
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status)


# What the key-protected operational routes can answer besides 200.
PROTECTED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "missing or wrong API key"},
    503: {"model": ErrorResponse, "description": "the model is still loading"},
}


@router.get(
    "/info",
    response_model=InfoResponse,
    dependencies=[Depends(check_api_key)],
    responses=PROTECTED,
)
async def info(request: Request, settings: SettingsDep) -> InfoResponse:
    """Model, device, limits, the attention modes with their parameters, and the defaults."""
    encoder = getattr(request.app.state, "encoder", None)
    if encoder is None:
        raise NotReady("the model is still loading", retry_after_s=1)
    default = attention_to_dict(settings.default_attention)
    if settings.default_attention == AUTO:
        default["dense_up_to_tokens"] = encoder.trained_length
        default["beyond"] = {"mode": "sliding_window", "window": settings.auto_window}
    modes = {
        mode.name: ModeInfo(
            description=mode.description,
            params={param.name: param.json_schema() for param in mode.params},
        )
        for mode in MODES.values()
    }
    limits = {
        "max_input_tokens": settings.max_input_tokens,
        "max_dense_tokens": settings.max_dense_tokens,
        "max_inputs_per_request": settings.max_inputs_per_request,
        "max_batch_tokens": settings.max_batch_tokens,
        "max_batch_cost": settings.max_batch_cost,
        "max_request_cost": settings.max_request_cost,
        "short_input_cost": settings.short_input_cost,
        "max_batch_size": settings.max_batch_size,
        "batch_wait_ms": settings.batch_wait_ms,
        "queue_size": settings.queue_size,
        "max_payload_bytes": settings.max_payload_bytes,
    }
    return InfoResponse(
        # the fields text-embeddings-inference's clients read
        model_id=encoder.name,
        model_dtype=str(encoder.dtype).removeprefix("torch."),
        model_type={"embedding": {"pooling": encoder.default_pooling}},
        max_input_length=settings.max_input_tokens,
        max_batch_tokens=settings.max_batch_tokens,
        max_batch_requests=settings.max_batch_size,
        max_client_batch_size=settings.max_inputs_per_request,
        max_concurrent_requests=settings.queue_size,
        auto_truncate=False,
        tokenization_workers=1,
        version=request.app.version,
        # longenc's own
        model=encoder.name,
        dimension=encoder.dim,
        max_position_embeddings=encoder.max_position_embeddings,
        position_extension=settings.position_extension,
        device=str(encoder.device),
        dtype=str(encoder.dtype).removeprefix("torch."),
        default_attention=default,
        default_pooling=encoder.default_pooling,
        position_embedding=encoder.position_embedding,
        trained_length=encoder.trained_length,
        layer_patterns=encoder.native_layer_patterns,
        prompts=sorted(encoder.prompts),
        default_prompt_name=encoder.default_prompt_name,
        modes=modes,
        limits=limits,
        forward_threads=request.app.state.batcher.threads.layout(),
        graph_forward=encoder.graph_forward,
    )


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(check_api_key)],
    responses={401: PROTECTED[401], 200: {"content": {"text/plain": {}}}},
)
def metrics(metrics: MetricsDep) -> Response:
    """Prometheus text format."""
    return Response(metrics.render(), media_type=CONTENT_TYPE)
