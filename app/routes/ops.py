"""Operations: /health, /info, /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.attention import AUTO, attention_to_dict
from app.deps import LifecycleDep, MetricsDep, SettingsDep
from app.errors import NotReady
from app.metrics import CONTENT_TYPE
from app.schemas import HealthResponse, InfoResponse, ModeInfo
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


@router.get("/info", response_model=InfoResponse)
async def info(request: Request, settings: SettingsDep) -> InfoResponse:
    """Model, device, limits, the attention modes with their parameters, and the defaults."""
    encoder = getattr(request.app.state, "encoder", None)
    if encoder is None:
        raise NotReady("the model is still loading", retry_after_s=1)
    default = attention_to_dict(settings.default_attention)
    if settings.default_attention == AUTO:
        default["dense_up_to_tokens"] = encoder.max_position_embeddings
        default["beyond"] = {"mode": "sliding_window", "window": settings.auto_window}
    modes = {
        mode.name: ModeInfo(
            description=mode.description,
            params={
                param.name: {"minimum": param.minimum, "even": param.even, "help": param.help}
                for param in mode.params
            },
        )
        for mode in MODES.values()
    }
    limits = {
        "max_input_tokens": settings.max_input_tokens,
        "max_dense_tokens": settings.max_dense_tokens,
        "max_inputs_per_request": settings.max_inputs_per_request,
        "max_batch_tokens": settings.max_batch_tokens,
        "max_batch_size": settings.max_batch_size,
        "batch_wait_ms": settings.batch_wait_ms,
        "queue_size": settings.queue_size,
        "max_payload_bytes": settings.max_payload_bytes,
    }
    return InfoResponse(
        model=encoder.name,
        dimension=encoder.dim,
        max_position_embeddings=encoder.max_position_embeddings,
        position_extension=settings.position_extension,
        device=str(encoder.device),
        dtype=str(encoder.dtype).removeprefix("torch."),
        default_attention=default,
        default_pooling=encoder.default_pooling,
        modes=modes,
        limits=limits,
    )


@router.get("/metrics", response_class=Response)
def metrics(request: Request, metrics: MetricsDep) -> Response:
    """Prometheus text format."""
    encoder = getattr(request.app.state, "encoder", None)
    body = metrics.render(encoder.device if encoder is not None else None)
    return Response(body, media_type=CONTENT_TYPE)
