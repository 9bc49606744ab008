"""The dynamic batcher: one asyncio task owns the queue, one worker thread runs every forward pass.

Inputs are queued one by one, each with its own Future. Inputs that share a `BatchKey` (the
resolved attention spec plus pooling and normalization, which the encoder applies inside its
forward pass) are batched together, oldest first, up to `max_batch_size` inputs and
`max_batch_tokens` padded tokens (inputs × longest input). A batch waits at most `batch_wait_ms`
after its oldest input arrived for company. A batch's results and errors go to its inputs and no
other; an input whose Future was cancelled (its client went away) is dropped before compute.
A device out-of-memory error splits the batch in halves and retries; a single input that still
does not fit gets `OutOfMemory`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import torch

from app.errors import NotReady, OutOfMemory, QueueFull
from app.metrics import Metrics
from sparse_core import AttentionSpec

logger = logging.getLogger("app.batcher")
T = TypeVar("T")


class BatchEncoder(Protocol):
    """What the batcher needs of an encoder (models.Encoder has it)."""

    device: torch.device

    def encode_ids(
        self, batch: list[list[int]], attention: AttentionSpec, pooling: str, normalize: bool
    ) -> list[torch.Tensor]: ...


@dataclass(frozen=True)
class BatchKey:
    """Inputs with equal keys can share a forward pass."""

    attention: AttentionSpec
    pooling: str
    normalize: bool


@dataclass(frozen=True)
class BatchLimits:
    max_batch_tokens: int
    max_batch_size: int
    batch_wait_s: float
    queue_size: int


@dataclass(frozen=True)
class Encoded:
    """One input's result and the batch that computed it."""

    embedding: torch.Tensor  # (dim,) or (tokens, dim) for pooling "none"
    batch_id: int
    started_at: float  # time.perf_counter() when the batch's forward pass began
    finished_at: float


@dataclass(eq=False)
class _Item:
    ids: list[int]
    key: BatchKey
    future: asyncio.Future[Encoded]
    enqueued_at: float = field(default_factory=time.perf_counter)
    taken: bool = False


class Batcher:
    """Queue + batching task + single forward worker. `start()` in a running loop first."""

    def __init__(self, encoder: BatchEncoder, limits: BatchLimits, metrics: Metrics) -> None:
        self.encoder = encoder
        self.limits = limits
        self.metrics = metrics
        self._queues: dict[BatchKey, deque[_Item]] = {}
        self._queued = 0
        self._arrived = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._batch_ids = itertools.count()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")

    @property
    def queued(self) -> int:
        return self._queued

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def close(self) -> None:
        """Stop taking inputs, finish every queued one, then stop the worker."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            await self._task
        self._worker.shutdown(wait=True)

    async def run_in_worker(self, function: Callable[..., T], *args: object) -> T:
        """Run `function(*args)` on the forward thread (warm-up, tests)."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, function, *args)

    def submit(self, batch: list[list[int]], key: BatchKey) -> list[asyncio.Future[Encoded]]:
        """Queue every input of one request, or none: raises QueueFull / NotReady."""
        if self._closing:
            raise NotReady("the server is shutting down", retry_after_s=1)
        if self._queued + len(batch) > self.limits.queue_size:
            raise QueueFull(
                f"queue full: {self._queued} of {self.limits.queue_size} inputs waiting; "
                "retry later",
                retry_after_s=1,
            )
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(key, deque())
        futures = []
        for ids in batch:
            item = _Item(ids=ids, key=key, future=loop.create_future())
            item.future.add_done_callback(lambda _, item=item: self._discard_if_cancelled(item))
            queue.append(item)
            futures.append(item.future)
        self._queued += len(batch)
        self.metrics.queue_size.set(self._queued)
        self._arrived.set()
        return futures

    def _discard_if_cancelled(self, item: _Item) -> None:
        if not item.future.cancelled() or item.taken:
            return
        self._queues[item.key].remove(item)
        item.taken = True
        self._queued -= 1
        self.metrics.queue_size.set(self._queued)
        self.metrics.cancelled_inputs.inc()

    # -- the batching task --------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            oldest = self._oldest()
            if oldest is None:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._wait_for_company(oldest)
            batch = self._take(oldest.key)
            if batch:
                await self._execute(batch)

    def _oldest(self) -> _Item | None:
        heads = [queue[0] for queue in self._queues.values() if queue]
        return min(heads, key=lambda item: item.enqueued_at, default=None)

    def _plan(self, key: BatchKey) -> tuple[list[_Item], bool]:
        """The inputs the next batch of `key` would hold, and whether it is full.

        Oldest first; an input that would push the padded cost over the budget is passed over
        (a shorter one behind it may still fit); the oldest input always goes in, alone if it
        is larger than the budget.
        """
        chosen: list[_Item] = []
        longest = 0
        full = False
        for item in self._queues.get(key, ()):
            if item.future.done():
                continue
            grown = max(longest, len(item.ids))
            if chosen and grown * (len(chosen) + 1) > self.limits.max_batch_tokens:
                full = True
                continue
            chosen.append(item)
            longest = grown
            if len(chosen) == self.limits.max_batch_size:
                return chosen, True
        return chosen, full

    async def _wait_for_company(self, oldest: _Item) -> None:
        deadline = oldest.enqueued_at + self.limits.batch_wait_s
        while not self._closing and self._queued < self.limits.queue_size:
            remaining = deadline - time.perf_counter()
            _, full = self._plan(oldest.key)
            if full or remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take(self, key: BatchKey) -> list[_Item]:
        batch, _ = self._plan(key)
        for item in batch:
            item.taken = True
        queue = self._queues[key]
        self._queues[key] = deque(item for item in queue if not item.taken)
        self._queued -= len(batch)
        self.metrics.queue_size.set(self._queued)
        return batch

    async def _execute(self, batch: list[_Item]) -> None:
        key = batch[0].key
        mode = key.attention.mode
        batch_id = next(self._batch_ids)
        started = time.perf_counter()
        for item in batch:
            self.metrics.queue_duration.labels(mode).observe(started - item.enqueued_at)
        self.metrics.batch_size.labels(mode).observe(len(batch))
        longest = max(len(item.ids) for item in batch)
        self.metrics.batch_tokens.labels(mode).observe(longest * len(batch))
        try:
            outcomes = await self.run_in_worker(self._forward, [item.ids for item in batch], key)
        except Exception as error:  # a bug in the forward pass: fail this batch only
            logger.exception("forward pass of batch %d (%s) failed", batch_id, key.attention)
            outcomes = [error] * len(batch)
        finished = time.perf_counter()
        self.metrics.inference_duration.labels(mode).observe(finished - started)
        for item, outcome in zip(batch, outcomes, strict=True):
            if item.future.done():  # cancelled while computing
                continue
            if isinstance(outcome, BaseException):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(Encoded(outcome, batch_id, started, finished))

    # -- the worker thread --------------------------------------------------------------------

    def _forward(self, batch: list[list[int]], key: BatchKey) -> list[torch.Tensor | OutOfMemory]:
        """Encode `batch`; on device OOM free the cache and retry in halves. Worker thread only."""
        on_cuda = self.encoder.device.type == "cuda"
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(self.encoder.device)
        try:
            embeddings = self.encoder.encode_ids(
                batch, key.attention, pooling=key.pooling, normalize=key.normalize
            )
            peak = torch.cuda.max_memory_allocated(self.encoder.device) if on_cuda else 0
            self.metrics.gpu_memory_peak.labels(key.attention.mode).set(peak)
            return list(embeddings)
        except torch.cuda.OutOfMemoryError:
            pass  # leave the except block so the failed pass's tensors can be freed
        if on_cuda:
            torch.cuda.empty_cache()
        if len(batch) == 1:
            return [
                OutOfMemory(
                    f"an input of {len(batch[0])} tokens does not fit in device memory with "
                    f"{key.attention.to_dict()} attention; use a sparser mode or a shorter input"
                )
            ]
        self.metrics.oom_splits.labels(key.attention.mode).inc()
        half = len(batch) // 2
        return self._forward(batch[:half], key) + self._forward(batch[half:], key)
