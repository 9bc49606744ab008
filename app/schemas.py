"""Request and response bodies (DESIGN.md §4)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    StrictBool,
    WithJsonSchema,
    model_validator,
)

from app.attention import Attention, json_integer

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
# A list of inputs: app.openapi adds max_inputs_per_request as its maxItems.
INPUTS = {"x-longenc": "inputs"}
# The schema states what is accepted: a non-empty text, or a non-empty list of them.
Texts = Annotated[
    str | list[str],
    AfterValidator(_check_texts),
    WithJsonSchema(
        {"anyOf": [_TEXT_SCHEMA, {"type": "array", "items": _TEXT_SCHEMA, "minItems": 1, **INPUTS}]}
    ),
]


def json_int(**bounds: int) -> Any:
    """An integer as JSON Schema counts them (3 or 3.0; never true, "3" or 3.5), with bounds
    that the published schema states."""
    return Annotated[Annotated[int, Strict(), Field(**bounds)], BeforeValidator(json_integer)]


# Rules that JSON Schema cannot state: they relate two fields, or count tokens rather than
# characters. A request that breaks one is refused with a 422 whose message contains the phrase
# listed; the OpenAPI description lists them, and the fuzz test accepts exactly these refusals of
# requests that are otherwise valid per the schema.
UNSCHEMATIZED_RULES = {
    "send late_chunking or chunking, not both": "late_chunking and chunking exclude each other",
    "pooling must be 'mean'": "late_chunking and chunking pool by mean",
    "need texts, not token ids": "late_chunking and chunking need texts",
    "overlap must be less than tokens": "chunking.overlap < chunking.tokens",
    "has no tokens of its own": "late_chunking: every chunk has tokens (not only spaces)",
    "must be at most 'block_size'": "fixed attention: summary <= block_size",
    "more than max_input_tokens": "an input's tokens <= max_input_tokens (see /info)",
    "exceeds max_dense_tokens": "dense/topk input tokens <= max_dense_tokens",
    "more than max_request_cost": "a request's attention token pairs <= max_request_cost",
    "more than max_response_floats": "a response's floats <= max_response_floats",
}


# A token id of the model's vocabulary; app.openapi adds the vocabulary's bound to the schema.
TOKEN_ID = {"x-longenc": "token-id"}
TOKEN_ID_SCHEMA = {"type": "integer", "minimum": 0, **TOKEN_ID}


def _token_ids(value: object, what: str) -> list[int]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{what} must be a non-empty list of token ids")
    ids = [json_integer(token) for token in value]
    for token in ids:
        if isinstance(token, bool) or not isinstance(token, int) or token < 0:
            raise ValueError(f"{what} holds {token!r}; token ids are integers >= 0")
    return ids


def _parse_input(value: object) -> str | list[str] | list[int] | list[list[int]]:
    """OpenAI's `input`: a text, texts, one token-id list or a list of them."""
    if isinstance(value, str) or (
        isinstance(value, list) and value and all(isinstance(item, str) for item in value)
    ):
        _check_texts(value)
        return value
    if isinstance(value, list) and value and all(isinstance(item, list) for item in value):
        return [_token_ids(item, f"input {index}") for index, item in enumerate(value)]
    if (
        isinstance(value, list)
        and value
        and not any(isinstance(item, (str, list)) for item in value)
    ):
        return _token_ids(value, "input")
    raise ValueError(
        "input must be a non-empty text, a non-empty list of texts, a list of token ids or a "
        "list of token-id lists"
    )


EmbeddingsInput = Annotated[
    str | list[str] | list[int] | list[list[int]],
    PlainValidator(_parse_input),
    WithJsonSchema(
        {
            "anyOf": [
                _TEXT_SCHEMA,
                {"type": "array", "items": _TEXT_SCHEMA, "minItems": 1, **INPUTS},
                {"type": "array", "items": TOKEN_ID_SCHEMA, "minItems": 1},
                {
                    "type": "array",
                    "items": {"type": "array", "items": TOKEN_ID_SCHEMA, "minItems": 1},
                    "minItems": 1,
                    **INPUTS,
                },
            ]
        }
    ),
]
# The model's prompt names and its dimension, added to the schema by app.openapi.
PROMPT_NAME = {"x-longenc": "prompt-name"}
DIMENSIONS = {"x-longenc": "dimensions"}


def _lower(value: object) -> object:
    """text-embeddings-inference's clients send "Left"/"Right"; DESIGN names "left"/"right"."""
    return value.lower() if isinstance(value, str) else value


Direction = Annotated[Literal["right", "left"], BeforeValidator(_lower)]


class Chunking(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: json_int(ge=1, le=1 << 20) = Field(description="tokens per chunk")
    overlap: json_int(ge=0, le=1 << 20) = Field(
        0, description="tokens consecutive chunks share; less than tokens"
    )

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
    truncate: StrictBool = Field(
        False, description="cut inputs longer than max_input_tokens instead of rejecting them"
    )
    truncation_direction: Direction = Field(
        "right", description="where truncate cuts: the text's end (right) or beginning (left)"
    )
    prompt_name: str | None = Field(
        None,
        description="a prompt of the model's sentence-transformers config",
        json_schema_extra=PROMPT_NAME,
    )


LATE_CHUNKING = Field(
    False,
    description="the inputs are consecutive chunks of one document: encoded joined, in one "
    "pass, one embedding per chunk from its own tokens (pooling: mean)",
)


class ChunkingFields(InferenceFields):
    """The inference fields plus both ways of embedding chunks late."""

    late_chunking: StrictBool = LATE_CHUNKING
    chunking: Chunking | None = Field(
        None,
        description="split each input into chunks of this many tokens, embedded late from one "
        "pass over the whole input (pooling: mean; not with late_chunking)",
    )

    @model_validator(mode="after")
    def _one_way_to_chunk(self) -> ChunkingFields:
        if self.late_chunking and self.chunking is not None:
            raise ValueError("send late_chunking or chunking, not both")
        return self


class Usage(BaseModel):
    prompt_tokens: int = Field(description="tokens of all inputs, special tokens included")
    total_tokens: int


class EncodeRequest(ChunkingFields):
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
    normalize: StrictBool = Field(True, description="L2-normalize each vector")


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


class EmbeddingsRequest(ChunkingFields):
    """OpenAI's embeddings request, plus longenc's fields."""

    input: EmbeddingsInput = Field(
        description="text(s), or token ids of the model's vocabulary (one list, or a list of "
        "lists), used as they are"
    )
    model: str | None = Field(None, description="accepted for compatibility; the served model")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: json_int(ge=1) | None = Field(
        None,
        description="keep the first dimensions, then re-normalize",
        json_schema_extra=DIMENSIONS,
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
    forward_threads: dict[str, int] = Field(
        description="streams (short passes side by side), threads_per_stream, and threads "
        "(a long pass's, and in all)"
    )
    graph_forward: bool = Field(
        description="whether dense passes run as a traced graph, outside Python "
        "(LONGENC_GRAPH_FORWARD, CPU, models without local layers)"
    )


class HealthResponse(BaseModel):
    status: Literal["loading", "ready", "draining", "failed"]
    error: str | None = None


class ErrorResponse(BaseModel):
    error: str
    error_type: str


class OpenAIError(BaseModel):
    message: str
    type: str = Field(description="OpenAI's class of error, e.g. invalid_request_error")
    param: str | None = Field(description="the request field at fault, when known")
    code: str = Field(description="longenc's error_type")


class OpenAIErrorResponse(BaseModel):
    """Errors of the /v1/ routes, in the shape OpenAI's clients parse."""

    error: OpenAIError
