"""From texts to embeddings: tokenize, check limits, resolve attention, queue, await the batch.

Shared by `/encode` and `/v1/embeddings`. Tokenization runs on its own thread before queueing,
so that length limits and the token budget are known before an input takes queue space.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from app.attention import AttentionChoice, resolve_attention
from app.batcher import Batcher, BatchKey, Encoded
from app.errors import ClientDisconnected, InvalidInput
from app.metrics import Metrics
from app.settings import Settings
from models import Encoder
from sparse_core import MODES, AttentionSpec

logger = logging.getLogger("app.service")


@dataclass(frozen=True)
class Prepared:
    """A request tokenized, checked and resolved, ready to queue."""

    ids: list[list[int]]
    key: BatchKey
    tokenization_s: float

    @property
    def attention(self) -> AttentionSpec:
        return self.key.attention

    @property
    def prompt_tokens(self) -> int:
        return sum(len(ids) for ids in self.ids)


@dataclass(frozen=True)
class EncodeResult:
    embeddings: list[torch.Tensor]  # one per input, in order
    queue_s: float
    inference_s: float


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

    async def prepare(
        self,
        texts: list[str],
        attention: AttentionChoice | None,
        pooling: str | None,
        normalize: bool,
        truncate: bool,
    ) -> Prepared:
        """Tokenize and check `texts`; raises InvalidInput naming the offending input."""
        limit = self.settings.max_inputs_per_request
        if len(texts) > limit:
            raise InvalidInput(f"{len(texts)} inputs in one request; at most {limit} allowed")
        max_tokens = self.settings.max_input_tokens
        started = time.perf_counter()
        ids = await asyncio.get_running_loop().run_in_executor(
            self._tokenizer, self.encoder.tokenize, texts, max_tokens if truncate else None
        )
        tokenization_s = time.perf_counter() - started
        for index, token_ids in enumerate(ids):
            if len(token_ids) > max_tokens:
                raise InvalidInput(
                    f"input {index} has {len(token_ids)} tokens, more than max_input_tokens="
                    f'{max_tokens}; shorten it or send "truncate": true'
                )
        longest = max(len(token_ids) for token_ids in ids)
        spec = resolve_attention(
            attention if attention is not None else self.settings.default_attention,
            longest,
            self.encoder.max_position_embeddings,
            self.settings.auto_window,
        )
        if MODES[spec.mode].pairwise and longest > self.settings.max_dense_tokens:
            raise InvalidInput(
                f"{spec.mode} attention over {longest} tokens exceeds max_dense_tokens="
                f"{self.settings.max_dense_tokens} (its cost grows with n²); use block or "
                "sliding_window attention, or a shorter input"
            )
        for token_ids in ids:
            self.metrics.input_tokens.labels(spec.mode).observe(len(token_ids))
        key = BatchKey(spec, pooling or self.encoder.default_pooling, normalize)
        return Prepared(ids, key, tokenization_s)

    async def run(
        self, prepared: Prepared, disconnected: Callable[[], Awaitable[object]]
    ) -> EncodeResult:
        """Queue the inputs and await their batches; the client leaving cancels what is left.

        Raises QueueFull / NotReady from the batcher, ClientDisconnected, or a batch's error.
        """
        submitted = time.perf_counter()
        futures = self.batcher.submit(prepared.ids, prepared.key)
        results = await gather_or_cancel(futures, disconnected)
        batches = {result.batch_id: result for result in results}
        inference_s = sum(item.finished_at - item.started_at for item in batches.values())
        last = max(item.finished_at for item in batches.values())
        queue_s = max(0.0, last - submitted - inference_s)
        return EncodeResult([result.embedding for result in results], queue_s, inference_s)

    async def warmup(self) -> None:
        """Forward passes per mode of the table, longer than the native position table, so that
        every kernel and the position extension are loaded (and compiled, where a kernel is):
        one input alone, then a padded batch of two long inputs and a short one."""
        native = self.encoder.max_position_embeddings
        texts = [" ".join(["warm"] * (native + extra)) for extra in (64, 32)] + ["warm up"]
        long_ids, shorter_ids, short_ids = self.encoder.tokenize(texts)
        for mode in MODES.values():
            params = {param.name: _warmup_value(param.minimum, param.even) for param in mode.params}
            spec = AttentionSpec(mode.name, **params)
            started = time.perf_counter()
            for batch in ([long_ids], [long_ids, shorter_ids, short_ids]):
                await self.batcher.run_in_worker(
                    self.encoder.encode_ids, batch, spec, self.encoder.default_pooling, True
                )
            logger.info("warm-up %s: %.2f s", spec, time.perf_counter() - started)


def _warmup_value(minimum: int, even: bool) -> int:
    value = max(minimum, 64)
    return value + (value % 2 if even else 0)


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
