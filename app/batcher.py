"""The dynamic batcher: one asyncio task owns the queue, forward threads (app.streams) run passes.

Inputs are queued one by one, each with its own Future and its attention cost in token pairs
(`AttentionSpec.cost`). Inputs that share a `BatchKey` (the resolved attention spec plus pooling
and normalization, which the encoder applies inside its forward pass) are batched together, oldest
first, up to `max_batch_size` inputs, `max_batch_tokens` padded tokens (inputs × longest input)
and `max_batch_cost` token pairs; an input larger than a budget runs alone. The batch planned here
is exactly the forward pass that runs (`encode_batch`): nothing downstream re-splits it.

Fairness: inputs costing at most `short_input_cost` pairs ride the short lane, the others the long
lane. While both lanes hold work they take turns, one forward pass each, so a short request waits
for at most one long forward pass, and a stream of short requests cannot starve a long one.
A short batch waits at most `batch_wait_s` after its oldest input arrived for company.

Threads: short batches run on the CPU's streams, side by side, one pass per stream; a long batch
runs on the wide thread, with every core, alone: it starts once the streams' passes have ended,
and no short pass starts while it runs. A short batch whose turn comes between long ones runs
alone too, so it runs wide. With one stream (always so on CUDA) passes run one at a time, as
they are planned.

Even shares: while other streams run short passes, a free stream takes at most its even share of
the short inputs waiting and running, ceil((waiting + running) / streams), and a batch that holds
its share runs without waiting for company. Taking everything that waits lets a closed loop's
clients clump: under 32 connections the passes settled into batches of 3, 7 and 22 that kept their
sizes (each clump's clients return together), and a pass of 3 costs more per text than one of 11.

A batch's results and errors go to its inputs and no other; an input whose Future was cancelled
(its client went away) is dropped before compute. A device out-of-memory error splits the batch in
halves and retries; a single input that still does not fit gets `OutOfMemory`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

import torch

from app.errors import NotReady, OutOfMemory, QueueFull
from app.metrics import Metrics
from app.streams import ForwardThreads
from sparse_core import AttentionSpec

logger = logging.getLogger("app.batcher")
T = TypeVar("T")
Lane = Literal["short", "long"]
LANES: tuple[Lane, ...] = ("short", "long")


class BatchEncoder(Protocol):
    """What the batcher needs of an encoder (models.Encoder has it)."""

    device: torch.device

    def encode_batch(
        self, batch: list[list[int]], attention: AttentionSpec, pooling: str, normalize: bool
    ) -> list[torch.Tensor]:
        """One forward pass over exactly `batch`; one result per input, in order."""
        ...


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
    # token pairs one forward pass may score; an input costing more runs alone
    max_batch_cost: int = 1 << 24
    # inputs costing at most this many token pairs ride the short lane
    short_input_cost: int = 1 << 18


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
    cost: int  # attention token pairs
    lane: Lane
    future: asyncio.Future[Encoded]
    enqueued_at: float = field(default_factory=time.perf_counter)
    taken: bool = False  # left the queue: batched, or dropped after a cancel


@dataclass
class _Plan:
    """The next forward pass of one queue, as it would be taken now."""

    items: list[_Item]
    full: bool  # no more inputs would fit: no reason to wait for company


class Batcher:
    """Queue + batching task + forward threads. `start()` in a running loop first.

    streams: short passes run side by side on a CPU (app.streams.stream_layout; 0 picks them);
    ignored on CUDA, where passes run one at a time.
    """

    def __init__(
        self, encoder: BatchEncoder, limits: BatchLimits, metrics: Metrics, streams: int = 1
    ) -> None:
        self.encoder = encoder
        self.limits = limits
        self.metrics = metrics
        # One FIFO per (lane, key); a queue is deleted as soon as it is empty, so distinct keys
        # leave nothing behind.
        self._queues: dict[tuple[Lane, BatchKey], deque[_Item]] = {}
        self._queued = 0
        self._arrived = asyncio.Event()
        self._closing = False
        self._last_lane: Lane = "long"  # the short lane goes first
        self._task: asyncio.Task[None] | None = None
        self._batch_ids = itertools.count()
        on_cpu = encoder.device.type == "cpu"
        self.threads = ForwardThreads(streams if on_cpu else 1, torch.get_num_threads())
        self._idle = list(self.threads.narrow)  # streams with no pass running
        self._wide_busy = False
        self._passes = 0  # forward passes running
        self._on_streams = 0  # inputs in the short passes running on the streams
        self._pass_tasks: set[asyncio.Task[None]] = set()

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def queue_count(self) -> int:
        """Queues currently held, one per (lane, batch key) with waiting inputs."""
        return len(self._queues)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def close(self) -> None:
        """Stop taking inputs, finish every queued one, then stop the worker."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            await self._task
        self.threads.shutdown()

    async def run_in_worker(self, function: Callable[..., T], *args: object) -> T:
        """Run `function(*args)` on the wide forward thread, outside the batcher's turns: for
        warm-up before the server takes requests, and tests."""
        return await asyncio.get_running_loop().run_in_executor(self.threads.wide, function, *args)

    async def run_on_streams(self, function: Callable[..., object], *args: object) -> None:
        """Run `function(*args)` on each stream in turn (warm-up, as run_in_worker)."""
        loop = asyncio.get_running_loop()
        for stream in self.threads.narrow:
            if stream is not self.threads.wide:
                await loop.run_in_executor(stream, function, *args)

    def submit(
        self, batch: list[list[int]], key: BatchKey, costs: list[int] | None = None
    ) -> list[asyncio.Future[Encoded]]:
        """Queue every input of one request, or none: raises QueueFull / NotReady.

        costs: each input's attention cost in token pairs (None: its length squared).
        """
        if self._closing:
            raise NotReady("the server is shutting down", retry_after_s=1)
        if self._queued + len(batch) > self.limits.queue_size:
            raise QueueFull(
                f"queue full: {self._queued} of {self.limits.queue_size} inputs waiting; "
                "retry later",
                retry_after_s=1,
            )
        costs = [len(ids) ** 2 for ids in batch] if costs is None else costs
        loop = asyncio.get_running_loop()
        futures = []
        for ids, cost in zip(batch, costs, strict=True):
            lane: Lane = "short" if cost <= self.limits.short_input_cost else "long"
            item = _Item(ids=ids, key=key, cost=cost, lane=lane, future=loop.create_future())
            item.future.add_done_callback(lambda _, item=item: self._drop_if_cancelled(item))
            self._queues.setdefault((lane, key), deque()).append(item)
            futures.append(item.future)
        self._queued += len(batch)
        self.metrics.queue_size.set(self._queued)
        self._arrived.set()
        return futures

    def _drop_if_cancelled(self, item: _Item) -> None:
        """Remove a queued input whose Future is done, i.e. cancelled by its client (idempotent)."""
        if item.taken or not item.future.done():
            return
        queue = self._queues[(item.lane, item.key)]
        queue.remove(item)
        self._release([item])
        if not queue:
            del self._queues[(item.lane, item.key)]
        if item.future.cancelled():
            self.metrics.cancelled_inputs.inc()

    def _release(self, items: list[_Item]) -> None:
        for item in items:
            item.taken = True
        self._queued -= len(items)
        self.metrics.queue_size.set(self._queued)

    # -- the batching task --------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            batch, wide, wake_at = self._next_batch(time.perf_counter())
            if batch:
                self._launch(batch, wide)
                continue
            if self._closing and self._queued == 0 and self._passes == 0:
                return
            # Nothing runnable now: sleep until an input arrives, a pass ends or a batch's wait
            # runs out.
            self._arrived.clear()
            timeout = None if wake_at is None else max(0.0, wake_at - time.perf_counter())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout)

    def _next_batch(self, now: float) -> tuple[list[_Item], bool, float | None]:
        """Take the batch to run now, if any: (items, whether it runs wide, None). Otherwise
        ([], False, when to look again), None meaning when something arrives or a pass ends.
        Synchronous, so it sees one consistent queue.

        The lane whose turn it is waits for its thread rather than let the other lane go: a long
        batch for every stream to finish, a short one for a free stream.

        Inputs cancelled while queued are skipped here even when their Future's callback has not
        run yet, so a cancelled input can never be chosen or keep the loop from sleeping.
        """
        for lane in self._lane_order():
            queue_key = self._oldest_queue(lane)
            if queue_key is None:
                continue
            if not self._thread_free(lane):
                return [], False, None
            plan = self._plan(queue_key, self._stream_share() if lane == "short" else None)
            if not plan.items:
                continue
            deadline = plan.items[0].enqueued_at + self.limits.batch_wait_s
            waiting_pays = lane == "short" and not plan.full and not self._closing
            if waiting_pays and now < deadline and self._queued < self.limits.queue_size:
                return [], False, deadline
            self._take(queue_key, plan.items)
            self._last_lane = lane
            return plan.items, lane == "long" or self._short_turn_alone(), None
        return [], False, None

    def _short_turn_alone(self) -> bool:
        """A short batch runs wide when it is its lane's only pass this turn: long inputs wait
        for the next turn (no other short pass starts beside them) and every stream is idle."""
        return self._streams_idle() and any(lane == "long" for lane, _ in self._queues)

    def _stream_share(self) -> int | None:
        """The most inputs a free stream takes while other streams run short passes: an even
        share of the short inputs waiting and running. None when no stream runs a pass: a burst
        into an idle server goes to one stream, up to max_batch_size.

        Every batch key's inputs count (and cancelled ones not yet dropped), so the share is
        never too small; a batch under it (another key's, or what is left once the other free
        streams took theirs) waits for company as any batch does.
        """
        if not self._on_streams:
            return None
        waiting = sum(len(queue) for (lane, _), queue in self._queues.items() if lane == "short")
        return -(-(waiting + self._on_streams) // len(self.threads.narrow))

    def _thread_free(self, lane: Lane) -> bool:
        """A long pass needs every stream idle (it takes all the cores); a short one, one."""
        if self._wide_busy:
            return False
        return self._streams_idle() if lane == "long" else bool(self._idle)

    def _streams_idle(self) -> bool:
        return len(self._idle) == len(self.threads.narrow)

    def _lane_order(self) -> tuple[Lane, Lane]:
        """Lanes take turns: the one that did not run last goes first."""
        return ("long", "short") if self._last_lane == "short" else ("short", "long")

    def _oldest_queue(self, lane: Lane) -> tuple[Lane, BatchKey] | None:
        """The queue of `lane` whose first live input is the oldest; cancelled inputs at the
        front of a queue are dropped on the way."""
        oldest: tuple[float, tuple[Lane, BatchKey]] | None = None
        for queue_key in [key for key in self._queues if key[0] == lane]:
            queue = self._queues[queue_key]
            while queue and queue[0].future.done():
                self._drop_if_cancelled(queue[0])  # deletes the queue once it is empty
            if queue and (oldest is None or queue[0].enqueued_at < oldest[0]):
                oldest = (queue[0].enqueued_at, queue_key)
        return None if oldest is None else oldest[1]

    def _plan(self, queue_key: tuple[Lane, BatchKey], share: int | None = None) -> _Plan:
        """The inputs the next batch of this queue would hold, and whether it is full: at most
        max_batch_size inputs, and at most `share` (see _stream_share) when given.

        Oldest first; an input that would push the batch over a budget is passed over (a smaller
        one behind it may still fit); the oldest input always goes in, alone if it is larger than
        a budget.
        """
        limits = self.limits
        size = limits.max_batch_size if share is None else min(share, limits.max_batch_size)
        chosen: list[_Item] = []
        longest = cost = 0
        full = False
        for item in self._queues.get(queue_key, ()):
            if item.future.done():
                continue
            grown = max(longest, len(item.ids))
            over_tokens = grown * (len(chosen) + 1) > limits.max_batch_tokens
            if chosen and (over_tokens or cost + item.cost > limits.max_batch_cost):
                full = True
                continue
            chosen.append(item)
            longest, cost = grown, cost + item.cost
            if len(chosen) == size:
                return _Plan(chosen, True)
        return _Plan(chosen, full)

    def _take(self, queue_key: tuple[Lane, BatchKey], batch: list[_Item]) -> None:
        self._release(batch)
        remaining = deque(item for item in self._queues[queue_key] if not item.taken)
        if remaining:
            self._queues[queue_key] = remaining
        else:
            del self._queues[queue_key]

    def _launch(self, batch: list[_Item], wide: bool) -> None:
        """Start `batch`'s pass on the wide thread or a free stream; it hands the thread back and
        wakes the batching task when it ends."""
        if wide:
            self._wide_busy = True
            executor = self.threads.wide
        else:
            executor = self._idle.pop()
            self._on_streams += len(batch)
        self._passes += 1

        async def run() -> None:
            try:
                await self._execute(batch, executor)
            except Exception as error:  # a bug after the pass: its inputs still get an answer
                logger.exception("batch of %d inputs (%s) failed", len(batch), batch[0].key)
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
            finally:
                if wide:
                    self._wide_busy = False
                else:
                    self._idle.append(executor)
                    self._on_streams -= len(batch)
                self._passes -= 1
                self._arrived.set()

        task = asyncio.get_running_loop().create_task(run(), name="forward-pass")
        self._pass_tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._pass_tasks.discard)

    async def _execute(self, batch: list[_Item], executor: ThreadPoolExecutor) -> None:
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
            outcomes = await asyncio.get_running_loop().run_in_executor(
                executor, self._forward, [item.ids for item in batch], key
            )
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

    # -- the forward threads -------------------------------------------------------------------

    def _forward(self, batch: list[list[int]], key: BatchKey) -> list[torch.Tensor | OutOfMemory]:
        """Encode `batch`; on device OOM free the cache and retry in halves (forward threads)."""
        on_cuda = self.encoder.device.type == "cuda"
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(self.encoder.device)
        try:
            embeddings = self.encoder.encode_batch(
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
