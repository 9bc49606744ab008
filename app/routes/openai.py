"""The OpenAI embeddings API: POST /v1/embeddings (plus longenc's fields), GET /v1/models.

Errors on these routes take OpenAI's shape (app.errors), so the official clients raise with
the message.
"""

from __future__ import annotations

import base64
from typing import Any

import torch
from fastapi import APIRouter, Depends, Request, Response

from app.deps import ServiceDep, check_api_key
from app.errors import InvalidInput
from app.routes.encode import ERRORS, options_of
from app.routes.inference import json_response, run_inference
from app.schemas import EmbeddingsRequest, EmbeddingsResponse, ModelList, OpenAIErrorResponse

router = APIRouter(tags=["openai"], dependencies=[Depends(check_api_key)])
# The same statuses as /encode's, in OpenAI's error shape.
OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": OpenAIErrorResponse, "description": error["description"]}
    for code, error in ERRORS.items()
}
CREATED = 0  # the served model has no creation date to report


@router.post("/v1/embeddings", response_model=EmbeddingsResponse, responses=OPENAI_ERRORS)
async def embeddings(body: EmbeddingsRequest, request: Request, service: ServiceDep) -> Response:
    """OpenAI-compatible embeddings; `dimensions` keeps the first d values and re-normalizes.
    With `chunking`, `data` holds one entry per chunk, `index` naming its input."""
    dim = service.encoder.dim
    if body.dimensions is not None and body.dimensions > dim:
        raise InvalidInput(f"dimensions must be between 1 and {dim}, got {body.dimensions}")
    inputs: Any = body.input
    if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
        inputs = [inputs]  # one text, or one token-id list
    prepared, result = await run_inference(
        request, service, inputs, options_of(body), body.late_chunking, body.chunking
    )
    if result.chunks is not None:
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": _format(chunk.embedding, body),
                "tokens": chunk.tokens,
                "chars": chunk.chars,
            }
            for index, chunks in enumerate(result.chunks)
            for chunk in chunks
        ]
    else:
        data = [
            {"object": "embedding", "index": index, "embedding": _format(vector, body)}
            for index, vector in enumerate(result.embeddings)
        ]
    usage = {"prompt_tokens": prepared.prompt_tokens, "total_tokens": prepared.prompt_tokens}
    response = {
        "object": "list",
        "data": data,
        "model": service.encoder.name,
        "usage": usage,
        "attention": prepared.attention.to_dict(),
    }
    return json_response(request, response, prepared, result)


@router.get(
    "/v1/models",
    response_model=ModelList,
    responses={code: OPENAI_ERRORS[code] for code in (401, 503)},
)
async def models(service: ServiceDep) -> ModelList:
    """The one served model, as OpenAI's model list."""
    card = {"id": service.encoder.name, "created": CREATED, "owned_by": "longenc"}
    return ModelList(data=[card])


def _format(vector: torch.Tensor, body: EmbeddingsRequest) -> torch.Tensor | str:
    if body.dimensions is not None:
        vector = torch.nn.functional.normalize(vector[: body.dimensions], dim=0)
    if body.encoding_format == "base64":
        return base64.b64encode(vector.numpy().astype("<f4").tobytes()).decode("ascii")
    return vector
