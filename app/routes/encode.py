"""POST /encode: texts in, one embedding (or token vectors, or chunks) per text out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from app.deps import ServiceDep, check_api_key
from app.routes.inference import json_response, run_inference
from app.schemas import EncodeRequest, EncodeResponse, ErrorResponse
from app.service import Options

router = APIRouter(tags=["inference"], dependencies=[Depends(check_api_key)])

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": description}
    for code, description in {
        401: "missing or wrong API key",
        408: "the body did not arrive in time",
        413: "body over the payload limit",
        422: "invalid field, too many inputs, an input over the token limit, or a request over "
        "the cost or response-size limit",
        429: "queue full; see Retry-After",
        503: "loading or shutting down",
        507: "a single input does not fit in device memory",
    }.items()
}


def options_of(body: Any, pooling: str | None = None, normalize: bool = True) -> Options:
    """The service's options from a request body's shared fields."""
    return Options(
        attention=body.attention,
        pooling=pooling,
        normalize=normalize,
        truncate=body.truncate,
        truncation_direction=body.truncation_direction,
        prompt_name=body.prompt_name,
    )


@router.post("/encode", response_model=EncodeResponse, responses=ERRORS)
async def encode(body: EncodeRequest, request: Request, service: ServiceDep) -> Response:
    """Embed each input with the requested attention pattern."""
    texts = body.inputs if isinstance(body.inputs, list) else [body.inputs]
    options = options_of(body, body.pooling, body.normalize)
    prepared, result = await run_inference(
        request, service, texts, options, body.late_chunking, body.chunking
    )
    if result.chunks is not None:
        embeddings: list[Any] = [
            [
                {"embedding": chunk.embedding, "tokens": chunk.tokens, "chars": chunk.chars}
                for chunk in chunks
            ]
            for chunks in result.chunks
        ]
    else:
        embeddings = result.embeddings
    usage = {"prompt_tokens": prepared.prompt_tokens, "total_tokens": prepared.prompt_tokens}
    response = {
        "model": service.encoder.name,
        "attention": prepared.attention.to_dict(),
        "embeddings": embeddings,
        "usage": usage,
    }
    return json_response(request, response, prepared, result)
