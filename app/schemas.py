"""Request and response bodies (DESIGN.md §4)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.attention import Attention

Pooling = Literal["mean", "cls", "none"]


def _non_empty(texts: str | list[str]) -> list[str]:
    texts = [texts] if isinstance(texts, str) else texts
    if not texts:
        raise ValueError("needs at least one input text")
    for index, text in enumerate(texts):
        if not text:
            raise ValueError(f"input {index} is an empty string; every input needs some text")
    return texts


Texts = Annotated[str | list[str], AfterValidator(_non_empty)]


class Usage(BaseModel):
    prompt_tokens: int = Field(description="tokens of all inputs, special tokens included")
    total_tokens: int


class EncodeRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "inputs": ["a long document ..."],
                    "attention": {"mode": "sliding_window", "window": 512},
                }
            ]
        },
    )

    inputs: Texts = Field(description="one text or a list of texts")
    attention: Attention | None = Field(
        None, description="attention pattern; omitted: the server's default (see /info)"
    )
    pooling: Pooling | None = Field(
        None, description="'mean', 'cls', or 'none' for token vectors; omitted: the model's"
    )
    normalize: bool = Field(True, description="L2-normalize each vector")
    truncate: bool = Field(
        False, description="cut inputs longer than max_input_tokens instead of rejecting them"
    )


class EncodeResponse(BaseModel):
    model: str
    attention: dict[str, Any] = Field(description="the attention the request ran with")
    embeddings: list[list[float]] | list[list[list[float]]] = Field(
        description="one vector per input, in order; a list of token vectors with pooling 'none'"
    )
    usage: Usage


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request, plus longenc's `attention` and `truncate`."""

    model_config = ConfigDict(extra="forbid")

    input: Texts
    model: str | None = Field(None, description="accepted for compatibility; the served model")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(
        None, ge=1, description="keep the first dimensions, then re-normalize"
    )
    user: str | None = None
    attention: Attention | None = None
    truncate: bool = False


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of little-endian float32")


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage
    attention: dict[str, Any]


class ModeInfo(BaseModel):
    description: str
    params: dict[str, dict[str, Any]]


class InfoResponse(BaseModel):
    model: str
    dimension: int
    max_position_embeddings: int = Field(description="the model's native position table")
    position_extension: str
    device: str
    dtype: str
    default_attention: dict[str, Any]
    default_pooling: str
    modes: dict[str, ModeInfo]
    limits: dict[str, int | float]


class HealthResponse(BaseModel):
    status: Literal["loading", "ready", "draining", "failed"]
    error: str | None = None


class ErrorResponse(BaseModel):
    error: str
    error_type: str
