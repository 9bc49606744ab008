"""text-embeddings-inference's routes, so its clients work unchanged: POST / and /embed (a bare
list of vectors), /embed_all (token vectors), /tokenize and /decode. GET /info carries the
fields TEI clients read (app.routes.ops)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from app.deps import ServiceDep, check_api_key
from app.errors import InvalidInput
from app.routes.encode import ERRORS, options_of
from app.routes.inference import json_response, run_inference
from app.schemas import (
    DIMENSIONS,
    LATE_CHUNKING,
    PROMPT_NAME,
    TOKEN_ID,
    InferenceFields,
    Texts,
    json_int,
)

router = APIRouter(tags=["text-embeddings-inference"], dependencies=[Depends(check_api_key)])


class EmbedAllRequest(InferenceFields):
    """TEI's request (inputs, truncate, truncation_direction, prompt_name) plus longenc's
    attention; token vectors are not pooled, so no late chunking here."""

    inputs: Texts


class EmbedRequest(EmbedAllRequest):
    """TEI's request plus longenc's attention and late chunking (one vector per chunk; chunk
    lists with spans are /encode's `chunking`)."""

    late_chunking: StrictBool = LATE_CHUNKING
    normalize: StrictBool = True
    dimensions: json_int(ge=1) | None = Field(
        None, description="keep the first d values", json_schema_extra=DIMENSIONS
    )


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: Texts
    add_special_tokens: StrictBool = True
    prompt_name: str | None = Field(None, json_schema_extra=PROMPT_NAME)


Ids = Annotated[
    list[Annotated[json_int(ge=0), Field(json_schema_extra=TOKEN_ID)]], Field(min_length=1)
]


class DecodeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: Ids | Annotated[list[Ids], Field(min_length=1)]
    skip_special_tokens: StrictBool = True


class TokenOut(BaseModel):
    id: int
    text: str
    special: bool
    start: int | None = Field(description="first character in the input (None: special)")
    stop: int | None = Field(description="character after the token (None: special)")


def _texts(inputs: str | list[str]) -> list[str]:
    return inputs if isinstance(inputs, list) else [inputs]


@router.post("/embed", response_model=list[list[float]], responses=ERRORS)
async def embed(body: EmbedRequest, request: Request, service: ServiceDep) -> Response:
    """One vector per input (per chunk with late_chunking), as a bare list."""
    dim = service.encoder.dim
    if body.dimensions is not None and body.dimensions > dim:
        raise InvalidInput(f"dimensions must be between 1 and {dim}, got {body.dimensions}")
    options = options_of(body, None, body.normalize)
    prepared, result = await run_inference(
        request, service, _texts(body.inputs), options, late_chunking=body.late_chunking
    )
    vectors: list[Any] = result.embeddings
    if body.dimensions is not None:
        vectors = [vector[: body.dimensions] for vector in vectors]
        if body.normalize:
            vectors = [vector / vector.norm().clamp_min(1e-12) for vector in vectors]
    return json_response(request, vectors, prepared, result)


# TEI serves its model's task at the root too; huggingface_hub's InferenceClient posts there.
router.add_api_route(
    "/", embed, methods=["POST"], response_model=list[list[float]], responses=ERRORS
)


@router.post("/embed_all", response_model=list[list[list[float]]], responses=ERRORS)
async def embed_all(body: EmbedAllRequest, request: Request, service: ServiceDep) -> Response:
    """Every input's token vectors (not normalized), as a bare list."""
    options = options_of(body, "none", False)
    prepared, result = await run_inference(request, service, _texts(body.inputs), options)
    return json_response(request, result.embeddings, prepared, result)


@router.post("/tokenize", response_model=list[list[TokenOut]], responses=ERRORS)
async def tokenize(body: TokenizeRequest, service: ServiceDep) -> list[list[TokenOut]]:
    """Each input's tokens: id, text, special or not, character range (TEI's shape)."""
    tokens, shift = await service.tokens(
        _texts(body.inputs), body.prompt_name, body.add_special_tokens
    )
    # ranges in the input's own text, without the prompt
    return [
        [
            TokenOut(
                id=token.id,
                text=token.text,
                special=token.special,
                start=None if token.start is None else max(0, token.start - shift),
                stop=None if token.stop is None else max(0, token.stop - shift),
            )
            for token in input_tokens
        ]
        for input_tokens in tokens
    ]


@router.post("/decode", response_model=list[str], responses=ERRORS)
async def decode(body: DecodeRequest, service: ServiceDep) -> list[str]:
    """Token ids back to text, one string per id list."""
    ids = body.ids if isinstance(body.ids[0], list) else [body.ids]
    return await service.decode(ids, body.skip_special_tokens)  # type: ignore[arg-type]
