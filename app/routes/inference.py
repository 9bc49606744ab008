"""What the two inference routes share: running a request through the service, and the response
with its timing headers (as text-embeddings-inference sends them)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pydantic_core
from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from app.attention import AttentionChoice
from app.middleware import MODE, RECEIVED_AT
from app.service import EncodeResult, EncodeService, Prepared
from sparse_core import AttentionSpec

# Above this many floats, the JSON body is rendered off the event loop.
_RENDER_OFF_LOOP_FLOATS = 100_000


async def wait_for_disconnect(request: Request) -> None:
    """Return once the client has closed the connection (the body was read before)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def run_inference(
    request: Request,
    service: EncodeService,
    texts: list[str],
    attention: AttentionChoice | None,
    pooling: str | None,
    normalize: bool,
    truncate: bool,
) -> tuple[Prepared, EncodeResult]:
    if isinstance(attention, AttentionSpec):  # label refusals with the mode asked for
        setattr(request.state, MODE, attention.mode)
    prepared = await service.prepare(texts, attention, pooling, normalize, truncate)
    setattr(request.state, MODE, prepared.attention.mode)
    result = await service.run(prepared, lambda: wait_for_disconnect(request))
    return prepared, result


async def json_response(
    request: Request,
    build_body: Callable[[], dict[str, Any]],
    prepared: Prepared,
    result: EncodeResult,
) -> Response:
    """Render `build_body()` as JSON (on a thread when large) with the time-split headers."""
    floats = sum(embedding.numel() for embedding in result.embeddings)
    if floats > _RENDER_OFF_LOOP_FLOATS:
        content = await run_in_threadpool(lambda: pydantic_core.to_json(build_body()))
    else:
        content = pydantic_core.to_json(build_body())
    total_s = time.perf_counter() - getattr(request.state, RECEIVED_AT)
    headers = {
        "x-total-time": _ms(total_s),
        "x-tokenization-time": _ms(prepared.tokenization_s),
        "x-queue-time": _ms(result.queue_s),
        "x-inference-time": _ms(result.inference_s),
        "x-prompt-tokens": str(prepared.prompt_tokens),
        "x-attention-mode": prepared.attention.mode,
    }
    return Response(content, media_type="application/json", headers=headers)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"
