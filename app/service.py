"""From texts to embeddings: tokenize, check limits, resolve attention, queue, await the batch.

Shared by `/encode` and `/v1/embeddings`. Tokenization runs on its own thread before queueing,
so that length limits and the token budget are known before an input takes queue space.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import torch

from app.attention import AttentionChoice, resolve_attention
from app.batcher import Batcher, BatchKey, Encoded
from app.chunking import Chunk, ChunkPlan, late_chunks, pool_spans, windows
from app.errors import ClientDisconnected, InvalidInput
from app.metrics import Metrics
from app.settings import Settings
from models import Encoder
from models.tokenizer import Token, Tokenized
from sparse_core import MODES, AttentionSpec

logger = logging.getLogger("app.service")


@dataclass(frozen=True)
class Options:
    """What a request asks of its inputs, the same on every inference route."""

    attention: AttentionChoice | None = None  # None: the server's default
    pooling: str | None = None  # None: the model's
    normalize: bool = True
    truncate: bool = False
    truncation_direction: Literal["right", "left"] = "right"
    prompt_name: str | None = None  # None: the model's default prompt, if any


@dataclass(frozen=True)
class Prepared:
    """A request tokenized, checked and resolved, ready to queue."""

    ids: list[list[int]]
    costs: list[int]  # each input's attention cost in token pairs (AttentionSpec.cost)
    key: BatchKey
    tokenization_s: float
    chunks: ChunkPlan | None = None  # late pooling of the token vectors, if asked

    @property
    def attention(self) -> AttentionSpec:
        return self.key.attention

    @property
    def prompt_tokens(self) -> int:
        return sum(len(ids) for ids in self.ids)


@dataclass(frozen=True)
class EncodeResult:
    embeddings: list[torch.Tensor]  # one per input, in order (late chunking: per chunk)
    queue_s: float
    inference_s: float
    chunks: list[list[Chunk]] | None = None  # chunking: each input's chunks


class EncodeService:
    """Turns validated requests into embeddings through the batcher."""

    def __init__(
        self, encoder: Encoder, batcher: Batcher, settings: Settings, metrics: Metrics
    ) -> None:
        self.encoder = encoder
        self.batcher = batcher
        self.settings = settings
        self.metrics = metrics
        self._tokenizer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize")

    def close(self) -> None:
        self._tokenizer.shutdown(wait=True)

    async def prepare(self, texts: list[str], options: Options) -> Prepared:
        """Tokenize and check `texts`; raises InvalidInput naming the offending input."""
        self._check_count(len(texts))
        max_tokens = self.settings.max_input_tokens if options.truncate else None
        tokenize = functools.partial(
            self.encoder.tokenize,
            texts,
            max_tokens,
            prompt_name=options.prompt_name,
            direction=options.truncation_direction,
        )
        started = time.perf_counter()
        try:
            ids = await asyncio.get_running_loop().run_in_executor(self._tokenizer, tokenize)
        except ValueError as error:  # an unknown prompt_name
            raise InvalidInput(str(error)) from None
        return self._check(ids, options, time.perf_counter() - started)

    async def prepare_late_chunks(self, texts: list[str], options: Options) -> Prepared:
        """`texts` are consecutive chunks of one document: one forward pass over them joined,
        one embedding per chunk from its own tokens. Limits apply to the joined document."""
        self._check_count(len(texts))
        parts, tokenization_s = await self._encode_texts(texts, options)
        ids, plan = late_chunks(parts, options.normalize)
        for index, (start, stop) in enumerate(plan.tokens[0]):
            if start == stop:  # e.g. only control characters: nothing to average
                raise InvalidInput(
                    f"input {index} has no tokens of its own; late chunking averages each "
                    "chunk's tokens"
                )
        self._check_whole([ids], "the joined document")
        return self._check([ids], _token_vectors(options), tokenization_s, plan)

    async def prepare_chunks(
        self, texts: list[str], options: Options, size: int, overlap: int
    ) -> Prepared:
        """Each input split into chunks of `size` tokens sharing `overlap`, embedded late from
        one forward pass over the whole input."""
        self._check_count(len(texts))
        if not 0 <= overlap < size:
            raise InvalidInput(f"chunking needs 0 <= overlap < tokens, got {overlap} and {size}")
        parts, tokenization_s = await self._encode_texts(texts, options)
        prompt_chars = len(self._prompt(options))
        planned = [windows(part, size, overlap, prompt_chars) for part in parts]
        plan = ChunkPlan(
            [tokens for tokens, _ in planned], [chars for _, chars in planned], options.normalize
        )
        ids = [part.ids for part in parts]
        self._check_whole(ids, "input {index}")
        return self._check(ids, _token_vectors(options), tokenization_s, plan)

    def _check_whole(self, ids: list[list[int]], what: str) -> None:
        """Late pooling needs every token of the text: nothing is truncated."""
        limit = self.settings.max_input_tokens
        for index, token_ids in enumerate(ids):
            if len(token_ids) > limit:
                raise InvalidInput(
                    f"{what.format(index=index)} has {len(token_ids)} tokens, more than "
                    f"max_input_tokens={limit}; chunked embeddings need the whole text, so it "
                    "is not truncated: send a shorter text"
                )

    async def _encode_texts(
        self, texts: list[str], options: Options
    ) -> tuple[list[Tokenized], float]:
        """Texts (with the request's prompt) tokenized whole, with character offsets."""
        if options.pooling not in (None, "mean"):
            raise InvalidInput(
                f"late chunking averages each chunk's tokens: pooling must be 'mean', got "
                f"{options.pooling!r}"
            )
        prompt = self._prompt(options)
        started = time.perf_counter()
        parts = await asyncio.get_running_loop().run_in_executor(
            self._tokenizer, self.encoder.tokenizer.encode, [prompt + text for text in texts]
        )
        return parts, time.perf_counter() - started

    def _prompt(self, options: Options) -> str:
        try:
            return self.encoder.prompt(options.prompt_name)
        except ValueError as error:  # an unknown prompt_name
            raise InvalidInput(str(error)) from None

    async def tokens(
        self, texts: list[str], prompt_name: str | None, add_special_tokens: bool
    ) -> tuple[list[list[Token]], int]:
        """Each text's tokens (the request's prompt prepended), on the tokenizer thread, and
        the prompt's length in characters, which the tokens' character ranges include."""
        self._check_count(len(texts))
        prompt = self._prompt(Options(prompt_name=prompt_name))
        tokenize = functools.partial(
            self.encoder.tokenizer.tokens, [prompt + text for text in texts], add_special_tokens
        )
        tokens = await asyncio.get_running_loop().run_in_executor(self._tokenizer, tokenize)
        return tokens, len(prompt)

    async def decode(self, ids: list[list[int]], skip_special_tokens: bool) -> list[str]:
        """Token ids of the model's vocabulary back to text, on the tokenizer thread."""
        self._check_token_ids(ids)
        decode = functools.partial(self.encoder.tokenizer.decode, ids, skip_special_tokens)
        return await asyncio.get_running_loop().run_in_executor(self._tokenizer, decode)

    def prepare_ids(self, ids: list[list[int]], options: Options) -> Prepared:
        """Check inputs given as token ids of the model's vocabulary (used as they are);
        raises InvalidInput naming the offending input."""
        self._check_count(len(ids))
        self._check_token_ids(ids)
        if options.truncate:  # ids are taken as they are: no special tokens to keep
            limit = self.settings.max_input_tokens
            keep = (
                slice(None, limit)
                if options.truncation_direction == "right"
                else slice(-limit, None)
            )
            ids = [token_ids[keep] for token_ids in ids]
        return self._check(ids, options, 0.0)

    def _check_token_ids(self, ids: list[list[int]]) -> None:
        vocab = self.encoder.config.vocab_size
        for index, token_ids in enumerate(ids):
            if not token_ids:
                raise InvalidInput(f"input {index} has no token ids")
            if min(token_ids) < 0 or max(token_ids) >= vocab:
                raise InvalidInput(
                    f"input {index} has token ids outside the model's vocabulary [0, {vocab})"
                )

    def _check_count(self, count: int) -> None:
        limit = self.settings.max_inputs_per_request
        if count > limit:
            raise InvalidInput(f"{count} inputs in one request; at most {limit} allowed")

    def _check(
        self,
        ids: list[list[int]],
        options: Options,
        tokenization_s: float,
        chunks: ChunkPlan | None = None,
    ) -> Prepared:
        """Every limit that does not need the model to run: input length, the dense length,
        the request's attention cost and the size of its response."""
        settings = self.settings
        max_tokens = settings.max_input_tokens
        for index, token_ids in enumerate(ids):
            if len(token_ids) > max_tokens:
                raise InvalidInput(
                    f"input {index} has {len(token_ids)} tokens, more than max_input_tokens="
                    f'{max_tokens}; shorten it or send "truncate": true'
                )
        longest = max(len(token_ids) for token_ids in ids)
        spec = resolve_attention(
            options.attention if options.attention is not None else settings.default_attention,
            longest,
            self.encoder.trained_length,
            settings.auto_window,
        )
        if MODES[spec.mode].pairwise and longest > settings.max_dense_tokens:
            raise InvalidInput(
                f"{spec.mode} attention over {longest} tokens exceeds max_dense_tokens="
                f"{settings.max_dense_tokens} (its cost grows with n²); use block or "
                "sliding_window attention, or a shorter input"
            )
        costs = [spec.cost(len(token_ids)) for token_ids in ids]
        if sum(costs) > settings.max_request_cost:
            raise InvalidInput(
                f"this request's {spec.mode} attention would score {sum(costs)} token pairs, "
                f"more than max_request_cost={settings.max_request_cost}; send fewer or shorter "
                "inputs per request, or a sparser attention mode"
            )
        pooling = options.pooling or self.encoder.default_pooling
        if chunks is not None:
            vectors = chunks.count
        else:
            vectors = sum(map(len, ids)) if pooling == "none" else len(ids)
        floats = vectors * self.encoder.dim
        if floats > settings.max_response_floats:
            raise InvalidInput(
                f"the response would hold {floats} floats ({vectors} vectors of "
                f"{self.encoder.dim}), more than max_response_floats="
                f"{settings.max_response_floats}; send fewer or shorter inputs, or pool them"
            )
        for token_ids in ids:
            self.metrics.input_tokens.labels(spec.mode).observe(len(token_ids))
        key = BatchKey(spec, pooling, options.normalize)
        return Prepared(ids, costs, key, tokenization_s, chunks)

    async def run(
        self, prepared: Prepared, disconnected: Callable[[], Awaitable[object]]
    ) -> EncodeResult:
        """Queue the inputs and await their batches; the client leaving cancels what is left.

        Raises QueueFull / NotReady from the batcher, ClientDisconnected, or a batch's error.
        """
        submitted = time.perf_counter()
        futures = self.batcher.submit(prepared.ids, prepared.key, prepared.costs)
        results = await gather_or_cancel(futures, disconnected)
        batches = {result.batch_id: result for result in results}
        inference_s = busy_time([(b.started_at, b.finished_at) for b in batches.values()])
        last = max(item.finished_at for item in batches.values())
        queue_s = max(0.0, last - submitted - inference_s)
        embeddings = [result.embedding for result in results]
        plan = prepared.chunks
        if plan is None:
            return EncodeResult(embeddings, queue_s, inference_s)
        pooled = [
            pool_spans(vectors, spans, plan.normalize)
            for vectors, spans in zip(embeddings, plan.tokens, strict=True)
        ]
        if plan.chars is None:  # late chunking: the inputs were the chunks
            return EncodeResult(pooled[0], queue_s, inference_s)
        chunks = [
            [
                Chunk(vector, token_span, char_span)
                for vector, token_span, char_span in zip(vectors, token_spans, chars, strict=True)
            ]
            for vectors, token_spans, chars in zip(pooled, plan.tokens, plan.chars, strict=True)
        ]
        flat = [vector for vectors in pooled for vector in vectors]
        return EncodeResult(flat, queue_s, inference_s, chunks)

    async def warmup(self) -> None:
        """Forward passes per mode of the table, longer than the native position table, so that
        every kernel and the position extension are loaded (and compiled, where a kernel is):
        one input alone, then a padded batch of two long inputs and a short one."""
        # Past a learned position table (512 rows for BERT) so its extension runs too; rotary
        # models need none, so their warm-up stays short whatever their trained length.
        length = min(self.encoder.max_position_embeddings, 1024)
        texts = [" ".join(["warm"] * (length + extra)) for extra in (64, 32)] + ["warm up"]
        long_ids, shorter_ids, short_ids = self.encoder.tokenize(texts)
        for mode in MODES.values():
            spec = AttentionSpec(mode.name, **{param.name: param.example for param in mode.params})
            started = time.perf_counter()
            for batch in ([long_ids], [long_ids, shorter_ids, short_ids]):
                await self.batcher.run_in_worker(
                    self.encoder.encode_batch, batch, spec, self.encoder.default_pooling, True
                )
            logger.info("warm-up %s: %.2f s", spec, time.perf_counter() - started)
        # each stream's own thread pool and caches, on a short batch
        await self.batcher.run_on_streams(
            self.encoder.encode_batch,
            [short_ids],
            AttentionSpec("dense"),
            self.encoder.default_pooling,
            True,
        )


def busy_time(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one (start, end) span: a request's batches may run side by
    side on the streams, and their time counts once."""
    total, covered_to = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > covered_to:
            total += end - max(start, covered_to)
            covered_to = end
    return total


def _token_vectors(options: Options) -> Options:
    """The forward pass of late pooling: raw token vectors, normalized after pooling."""
    return dataclasses.replace(options, pooling="none", normalize=False)


async def gather_or_cancel(
    futures: list[asyncio.Future[Encoded]], disconnected: Callable[[], Awaitable[object]]
) -> list[Encoded]:
    """Every future's result, unless the client disconnects first (-> ClientDisconnected).

    Whatever way this ends (error, disconnect, cancellation), unfinished futures are cancelled
    so the batcher drops their inputs.
    """
    gathered = asyncio.gather(*futures)
    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({gathered, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if gathered not in done:
            raise ClientDisconnected("the client closed the connection")
        return gathered.result()
    finally:
        watcher.cancel()
        for future in futures:
            future.cancel()
        gathered.cancel()
        gathered.add_done_callback(_retrieve)


def _retrieve(future: asyncio.Future) -> None:
    """Mark a future's outcome as seen, so asyncio does not log an abandoned error."""
    if not future.cancelled():
        future.exception()
