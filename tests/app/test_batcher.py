"""The dynamic batcher's rules, driven with a small recording encoder (no model needed).

The fake encoder's "embedding" of an input is (sum of its ids, its length), so every test can
check that each Future got its own input's result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import torch

from app.batcher import Batcher, BatchKey, BatchLimits
from app.errors import NotReady, OutOfMemory, QueueFull
from app.metrics import Metrics
from sparse_core import AttentionSpec

DENSE = BatchKey(AttentionSpec("dense"), "mean", True)
BLOCK = BatchKey(AttentionSpec("block", block_size=4), "mean", True)
POISON = 666  # an input starting with this id makes the fake encoder fail


class RecordingEncoder:
    device = torch.device("cpu")

    def __init__(self, out_of_memory: Callable[[list[list[int]]], bool] | None = None) -> None:
        self.batches: list[tuple[list[list[int]], AttentionSpec]] = []
        self.out_of_memory = out_of_memory or (lambda batch: False)

    def encode_ids(self, batch, attention, pooling, normalize):
        self.batches.append((batch, attention))
        if self.out_of_memory(batch):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (raised by the test)")
        if any(ids[0] == POISON for ids in batch):
            raise RuntimeError("poisoned input")
        return [torch.tensor([float(sum(ids)), float(len(ids))]) for ids in batch]


def expected(ids: list[int]) -> list[float]:
    return [float(sum(ids)), float(len(ids))]


def limits(**overrides: float) -> BatchLimits:
    values = {"max_batch_tokens": 1000, "max_batch_size": 32, "batch_wait_s": 0.0}
    values |= {"queue_size": 100} | overrides
    return BatchLimits(**values)


def run(scenario: Callable[[Batcher, RecordingEncoder], object], encoder=None, **overrides):
    """Run `scenario(batcher, encoder)` (a coroutine function) in a fresh loop, then close."""
    encoder = encoder or RecordingEncoder()
    metrics = Metrics()

    async def main():
        batcher = Batcher(encoder, limits(**overrides), metrics)
        batcher.start()
        try:
            return await scenario(batcher, encoder)
        finally:
            await batcher.close()

    return asyncio.run(main()), encoder, metrics


async def results(futures) -> list[object]:
    return await asyncio.gather(*futures, return_exceptions=True)


def test_inputs_with_the_same_key_share_a_batch_and_keys_never_mix() -> None:
    dense_inputs = [[1, 2], [3, 4, 5], [6]]
    block_inputs = [[7, 8], [9]]

    async def scenario(batcher, encoder):
        dense = batcher.submit(dense_inputs, DENSE)
        block = batcher.submit(block_inputs, BLOCK)
        return await results(dense), await results(block)

    (dense, block), encoder, _ = run(scenario)
    assert [batch for batch, _ in encoder.batches] == [dense_inputs, block_inputs]
    assert [spec for _, spec in encoder.batches] == [DENSE.attention, BLOCK.attention]
    assert [r.embedding.tolist() for r in dense] == [expected(ids) for ids in dense_inputs]
    assert [r.embedding.tolist() for r in block] == [expected(ids) for ids in block_inputs]


def test_batches_keep_to_max_batch_size() -> None:
    inputs = [[index] for index in range(1, 6)]

    async def scenario(batcher, encoder):
        return await results(batcher.submit(inputs, DENSE))

    outputs, encoder, metrics = run(scenario, max_batch_size=2)
    assert [len(batch) for batch, _ in encoder.batches] == [2, 2, 1]
    assert [r.embedding.tolist() for r in outputs] == [expected(ids) for ids in inputs]
    histogram = metrics.registry.get_sample_value("longenc_batch_size_count", {"mode": "dense"})
    assert histogram == 3


def test_padded_token_budget_passes_over_a_long_input_and_runs_it_alone() -> None:
    # budget 10: [2] + [8] would pad to 2 x 8 = 16 tokens, so the short ones go together first.
    inputs = [[1, 1], [2] * 8, [3, 3], [4] * 12]

    async def scenario(batcher, encoder):
        return await results(batcher.submit(inputs, DENSE))

    outputs, encoder, _ = run(scenario, max_batch_tokens=10)
    assert [batch for batch, _ in encoder.batches] == [
        [[1, 1], [3, 3]],
        [[2] * 8],
        [[4] * 12],  # longer than the whole budget: alone
    ]
    assert [r.embedding.tolist() for r in outputs] == [expected(ids) for ids in inputs]


def test_a_failing_batch_fails_its_inputs_only_and_the_batcher_goes_on() -> None:
    async def scenario(batcher, encoder):
        poisoned = batcher.submit([[POISON, 1], [2, 3]], DENSE)
        healthy = batcher.submit([[4, 5]], BLOCK)
        first = await results(poisoned), await results(healthy)
        later = await results(batcher.submit([[6]], DENSE))
        return first, later

    ((poisoned, healthy), later), _, _ = run(scenario)
    assert all(isinstance(outcome, RuntimeError) for outcome in poisoned)
    assert healthy[0].embedding.tolist() == expected([4, 5])
    assert later[0].embedding.tolist() == expected([6])


def test_out_of_memory_splits_the_batch_and_fails_only_the_input_that_cannot_fit() -> None:
    inputs = [[1] * 3, [2] * 3, [3] * 50, [4] * 3]
    encoder = RecordingEncoder(out_of_memory=lambda batch: sum(map(len, batch)) > 20)

    async def scenario(batcher, encoder):
        first = await results(batcher.submit(inputs, DENSE))
        later = await results(batcher.submit([[5] * 4], DENSE))
        return first, later

    (outputs, later), encoder, metrics = run(scenario, encoder=encoder)
    assert [len(batch) for batch, _ in encoder.batches] == [4, 2, 2, 1, 1, 1]
    assert isinstance(outputs[2], OutOfMemory)
    assert "50 tokens" in str(outputs[2])
    for index in (0, 1, 3):
        assert outputs[index].embedding.tolist() == expected(inputs[index])
    assert later[0].embedding.tolist() == expected([5] * 4)
    splits = metrics.registry.get_sample_value("longenc_oom_splits_total", {"mode": "dense"})
    assert splits == 2


def test_an_input_cancelled_while_queued_is_never_computed() -> None:
    async def scenario(batcher, encoder):
        kept, dropped = batcher.submit([[1], [2]], DENSE)
        dropped.cancel()  # its client went away before the batcher ran
        return await kept, batcher

    (kept, batcher), encoder, metrics = run(scenario)
    assert batcher.queued == 0
    assert [batch for batch, _ in encoder.batches] == [[[1]]]
    assert kept.embedding.tolist() == expected([1])
    assert metrics.registry.get_sample_value("longenc_cancelled_inputs_total") == 1


def test_a_full_queue_refuses_the_whole_request() -> None:
    async def scenario(batcher, encoder):
        accepted = batcher.submit([[1], [2]], DENSE)
        with pytest.raises(QueueFull) as refused:
            batcher.submit([[3], [4]], DENSE)  # 2 + 2 > 3
        queued = batcher.queued
        await results(accepted)
        return refused.value, queued

    (error, queued), encoder, _ = run(scenario, queue_size=3)
    assert error.retry_after_s is not None and error.status_code == 429
    assert queued == 2
    assert [batch for batch, _ in encoder.batches] == [[[1], [2]]]


def test_a_batch_waits_for_company_until_it_is_full() -> None:
    async def scenario(batcher, encoder):
        first = batcher.submit([[1]], DENSE)
        await asyncio.sleep(0.05)  # the batcher is waiting for company now
        second = batcher.submit([[2]], DENSE)
        return await results(first + second)

    # The wait is long, but the batch runs as soon as it is full (max_batch_size=2).
    _, encoder, _ = run(scenario, batch_wait_s=60.0, max_batch_size=2)
    assert [batch for batch, _ in encoder.batches] == [[[1], [2]]]


def test_close_finishes_queued_inputs_at_once_and_refuses_new_ones() -> None:
    async def scenario(batcher, encoder):
        futures = batcher.submit([[1], [2]], DENSE)  # would wait 60 s for company
        await batcher.close()
        with pytest.raises(NotReady):
            batcher.submit([[3]], DENSE)
        return [future.result().embedding.tolist() for future in futures]

    outputs, encoder, _ = run(scenario, batch_wait_s=60.0)
    assert outputs == [expected([1]), expected([2])]
