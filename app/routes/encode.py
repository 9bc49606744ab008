"""POST /encode: texts in, one embedding (or token vectors) per text out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from app.deps import ServiceDep, check_api_key
from app.routes.inference import json_response, run_inference
from app.schemas import EncodeRequest, EncodeResponse, ErrorResponse

router = APIRouter(tags=["inference"], dependencies=[Depends(check_api_key)])

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": description}
    for code, description in {
        401: "missing or wrong API key",
        413: "body over the payload limit",
        422: "invalid field, too many inputs, or an input over the token limit",
        429: "queue full; see Retry-After",
        503: "loading or shutting down",
        507: "a single input does not fit in device memory",
    }.items()
}


@router.post("/encode", response_model=EncodeResponse, responses=ERRORS)
async def encode(body: EncodeRequest, request: Request, service: ServiceDep) -> Response:
    """Embed each input with the requested attention pattern."""
    texts = body.inputs if isinstance(body.inputs, list) else [body.inputs]
    prepared, result = await run_inference(
        request, service, texts, body.attention, body.pooling, body.normalize, body.truncate
    )

    def build_body() -> dict[str, Any]:
        usage = {"prompt_tokens": prepared.prompt_tokens, "total_tokens": prepared.prompt_tokens}
        return {
            "model": service.encoder.name,
            "attention": prepared.attention.to_dict(),
            "embeddings": [embedding.tolist() for embedding in result.embeddings],
            "usage": usage,
        }

    return await json_response(request, build_body, prepared, result)
