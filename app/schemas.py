"""Request and response bodies (DESIGN.md §4)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from app.attention import Attention

Pooling = Literal["mean", "cls", "last", "none"]


def _check_texts(texts: str | list[str]) -> list[str]:
    """One text or a non-empty list of them, each non-empty and valid Unicode: a lone surrogate
    (JSON's "\\ud800" escape, or the bytes ED A0 80, which Python's JSON decoder lets through)
    has no UTF-8 form and cannot be tokenized."""
    texts = [texts] if isinstance(texts, str) else texts
    if not texts:
        raise ValueError("needs at least one input text")
    for index, text in enumerate(texts):
        if not text:
            raise ValueError(f"input {index} is an empty string; every input needs some text")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(
                f"input {index} holds a lone surrogate ({text[error.start]!a} at character "
                f"{error.start}), which is not valid Unicode text"
            ) from None
    return texts


_TEXT_SCHEMA = {"type": "string", "minLength": 1}
# The schema states what is accepted: a non-empty text, or a non-empty list of them.
Texts = Annotated[
    str | list[str],
    AfterValidator(_check_texts),
    WithJsonSchema(
        {"anyOf": [_TEXT_SCHEMA, {"type": "array", "items": _TEXT_SCHEMA, "minItems": 1}]}
    ),
]


TokenIds = Annotated[
    list[Annotated[int, Field(ge=0)]]
    | list[Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]],
    Field(min_length=1),
]


def _lower(value: object) -> object:
    """text-embeddings-inference's clients send "Left"/"Right"; DESIGN names "left"/"right"."""
    return value.lower() if isinstance(value, str) else value


Direction = Annotated[Literal["right", "left"], BeforeValidator(_lower)]


class Chunking(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: int = Field(ge=1, le=1 << 20, description="tokens per chunk")
    overlap: int = Field(0, ge=0, le=1 << 20, description="tokens consecutive chunks share")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> Chunking:
        if self.overlap >= self.tokens:
            raise ValueError(
                f"overlap must be less than tokens, got {self.overlap} >= {self.tokens}"
            )
        return self


class InferenceFields(BaseModel):
    """What every inference route accepts beside its inputs (DESIGN §4)."""

    model_config = ConfigDict(extra="forbid")

    attention: Attention | None = Field(
        None, description="attention pattern; omitted: the server's default (see /info)"
    )
    truncate: bool = Field(
        False, description="cut inputs longer than max_input_tokens instead of rejecting them"
    )
    truncation_direction: Direction = Field(
        "right", description="where truncate cuts: the text's end (right) or beginning (left)"
    )
    prompt_name: str | None = Field(
        None, max_length=256, description="a prompt of the model's sentence-transformers config"
    )
    late_chunking: bool = Field(
        False,
        description="the inputs are consecutive chunks of one document: encoded joined, in one "
        "pass, one embedding per chunk from its own tokens",
    )
    chunking: Chunking | None = Field(
        None,
        description="split each input into chunks of this many tokens, embedded late from one "
        "pass over the whole input",
    )

    @model_validator(mode="after")
    def _one_way_to_chunk(self) -> InferenceFields:
        if self.late_chunking and self.chunking is not None:
            raise ValueError("send late_chunking or chunking, not both")
        return self


class Usage(BaseModel):
    prompt_tokens: int = Field(description="tokens of all inputs, special tokens included")
    total_tokens: int


class EncodeRequest(InferenceFields):
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
    pooling: Pooling | None = Field(
        None, description="'mean', 'cls', or 'none' for token vectors; omitted: the model's"
    )
    normalize: bool = Field(True, description="L2-normalize each vector")


class ChunkEmbedding(BaseModel):
    embedding: list[float]
    tokens: tuple[int, int] = Field(description="[start, end) in the input's token ids")
    chars: tuple[int, int] = Field(description="[start, end) in the input's text")


class EncodeResponse(BaseModel):
    model: str
    attention: dict[str, Any] = Field(description="the attention the request ran with")
    embeddings: list[list[float]] | list[list[list[float]]] | list[list[ChunkEmbedding]] = Field(
        description="one vector per input, in order; a list of token vectors with pooling "
        "'none'; with chunking, each input's chunks"
    )
    usage: Usage


class EmbeddingsRequest(InferenceFields):
    """OpenAI's embeddings request, plus longenc's fields."""

    input: Texts | TokenIds = Field(
        description="text(s), or token ids of the model's vocabulary (one list, or a list of "
        "lists), used as they are"
    )
    model: str | None = Field(None, description="accepted for compatibility; the served model")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(
        None, ge=1, description="keep the first dimensions, then re-normalize"
    )
    user: str | None = None


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int = Field(description="the input's index")
    embedding: list[float] | str = Field(description="floats, or base64 of little-endian float32")
    tokens: tuple[int, int] | None = Field(None, description="chunking: the chunk's token range")
    chars: tuple[int, int] | None = Field(None, description="chunking: its character range")


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage
    attention: dict[str, Any]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ModeInfo(BaseModel):
    description: str
    params: dict[str, dict[str, Any]]


class InfoResponse(BaseModel):
    model_id: str = Field(description="text-embeddings-inference's name for `model`")
    model_dtype: str
    model_type: dict[str, dict[str, str]] = Field(description='{"embedding": {"pooling": ...}}')
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int
    max_client_batch_size: int
    max_concurrent_requests: int
    auto_truncate: bool
    tokenization_workers: int
    version: str
    model: str
    dimension: int
    max_position_embeddings: int = Field(description="the model's native position table")
    position_extension: str
    device: str
    dtype: str
    default_attention: dict[str, Any]
    default_pooling: str
    position_embedding: str = Field(description='"learned" or "rotary"')
    trained_length: int = Field(
        description="tokens the model was trained on; auto goes sparse beyond"
    )
    layer_patterns: list[dict[str, Any]] = Field(
        description="each layer's native attention: global, or its trained local window"
    )
    prompts: list[str] = Field(description="prompt names of the model (prompt_name)")
    default_prompt_name: str | None
    modes: dict[str, ModeInfo]
    limits: dict[str, int | float]


class HealthResponse(BaseModel):
    status: Literal["loading", "ready", "draining", "failed"]
    error: str | None = None


class ErrorResponse(BaseModel):
    error: str
    error_type: str
