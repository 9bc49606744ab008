"""POST /v1/embeddings: OpenAI's embeddings API, plus the `attention` extension."""

from __future__ import annotations

import base64
from typing import Any

import torch
from fastapi import APIRouter, Depends, Request, Response

from app.deps import ServiceDep, check_api_key
from app.errors import InvalidInput
from app.routes.encode import ERRORS
from app.routes.inference import json_response, run_inference
from app.schemas import EmbeddingsRequest, EmbeddingsResponse

router = APIRouter(tags=["openai"], dependencies=[Depends(check_api_key)])


@router.post("/v1/embeddings", response_model=EmbeddingsResponse, responses=ERRORS)
async def embeddings(body: EmbeddingsRequest, request: Request, service: ServiceDep) -> Response:
    """OpenAI-compatible embeddings; `dimensions` keeps the first d values and re-normalizes."""
    dim = service.encoder.dim
    if body.dimensions is not None and body.dimensions > dim:
        raise InvalidInput(f"dimensions must be between 1 and {dim}, got {body.dimensions}")
    texts = body.input if isinstance(body.input, list) else [body.input]
    prepared, result = await run_inference(
        request, service, texts, body.attention, None, True, body.truncate
    )

    def build_body() -> dict[str, Any]:
        data = [
            {"object": "embedding", "index": index, "embedding": _format(vector, body)}
            for index, vector in enumerate(result.embeddings)
        ]
        usage = {"prompt_tokens": prepared.prompt_tokens, "total_tokens": prepared.prompt_tokens}
        return {
            "object": "list",
            "data": data,
            "model": service.encoder.name,
            "usage": usage,
            "attention": prepared.attention.to_dict(),
        }

    return await json_response(request, build_body, prepared, result)


def _format(vector: torch.Tensor, body: EmbeddingsRequest) -> list[float] | str:
    if body.dimensions is not None:
        vector = torch.nn.functional.normalize(vector[: body.dimensions], dim=0)
    if body.encoding_format == "base64":
        return base64.b64encode(vector.numpy().astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()
