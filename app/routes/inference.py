"""What the inference routes share: running a request through the service, and the response
with its timing headers (as text-embeddings-inference sends them)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pydantic_core
import torch
from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from app.errors import InvalidInput
from app.middleware import MODE, RECEIVED_AT
from app.schemas import Chunking
from app.service import EncodeResult, EncodeService, Options, Prepared
from sparse_core import AttentionSpec

# Above this many floats, the JSON body is streamed, rendered piece by piece on a worker thread:
# never several copies of a large response in memory, never a long render on the event loop.
_STREAM_FLOATS = 100_000
_STREAM_PIECE_BYTES = 1 << 20


async def wait_for_disconnect(request: Request) -> None:
    """Return once the client has closed the connection (the body was read before)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def run_inference(
    request: Request,
    service: EncodeService,
    inputs: list[str] | list[list[int]],
    options: Options,
    late_chunking: bool = False,
    chunking: Chunking | None = None,
) -> tuple[Prepared, EncodeResult]:
    """Prepare (tokenize and check) then run `inputs`: texts, or token-id lists."""
    if isinstance(options.attention, AttentionSpec):  # label refusals with the mode asked for
        setattr(request.state, MODE, options.attention.mode)
    token_ids = isinstance(inputs[0], list)
    if token_ids and (late_chunking or chunking is not None):
        raise InvalidInput("late_chunking and chunking need texts, not token ids")
    if token_ids:
        prepared = service.prepare_ids(inputs, options)  # type: ignore[arg-type]
    elif late_chunking:
        prepared = await service.prepare_late_chunks(inputs, options)  # type: ignore[arg-type]
    elif chunking is not None:
        prepared = await service.prepare_chunks(
            inputs,  # type: ignore[arg-type]
            options,
            chunking.tokens,
            chunking.overlap,
        )
    else:
        prepared = await service.prepare(inputs, options)  # type: ignore[arg-type]
    setattr(request.state, MODE, prepared.attention.mode)
    result = await service.run(prepared, lambda: wait_for_disconnect(request))
    return prepared, result


def json_response(
    request: Request, body: Any, prepared: Prepared, result: EncodeResult
) -> Response:
    """`body` (JSON values and tensors) as JSON with the time-split headers; streamed when large."""
    total_s = time.perf_counter() - getattr(request.state, RECEIVED_AT)
    headers = {
        "x-total-time": _ms(total_s),
        "x-tokenization-time": _ms(prepared.tokenization_s),
        "x-queue-time": _ms(result.queue_s),
        "x-inference-time": _ms(result.inference_s),
        "x-prompt-tokens": str(prepared.prompt_tokens),
        "x-attention-mode": prepared.attention.mode,
    }
    floats = sum(embedding.numel() for embedding in result.embeddings)
    if floats <= _STREAM_FLOATS:
        return Response(b"".join(render_json(body)), media_type="application/json", headers=headers)
    return StreamingResponse(
        in_pieces(render_json(body)), media_type="application/json", headers=headers
    )


def render_json(value: Any) -> Iterator[bytes]:
    """JSON text of dicts, lists, tuples, tensors and plain values, one vector at a time."""
    if isinstance(value, torch.Tensor):
        if value.dim() <= 1:
            yield pydantic_core.to_json(value.tolist())
        else:
            yield from _sequence(value.unbind(0))
    elif isinstance(value, dict):
        yield b"{"
        for index, (key, item) in enumerate(value.items()):
            yield (b"," if index else b"") + pydantic_core.to_json(key) + b":"
            yield from render_json(item)
        yield b"}"
    elif isinstance(value, (list, tuple)):
        yield from _sequence(value)
    else:
        yield pydantic_core.to_json(value)


def _sequence(items: Any) -> Iterator[bytes]:
    yield b"["
    for index, item in enumerate(items):
        if index:
            yield b","
        yield from render_json(item)
    yield b"]"


def in_pieces(parts: Iterator[bytes]) -> Iterator[bytes]:
    """Join small parts into pieces of about _STREAM_PIECE_BYTES (one worker hop each)."""
    buffer: list[bytes] = []
    size = 0
    for part in parts:
        buffer.append(part)
        size += len(part)
        if size >= _STREAM_PIECE_BYTES:
            yield b"".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield b"".join(buffer)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"
