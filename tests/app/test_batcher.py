"""The dynamic batcher's rules, driven with a small recording encoder (no model needed).

The fake encoder's "embedding" of an input is (sum of its ids, its length), so every test can
check that each Future got its own input's result.
"""

from __future__ import annotations

import asyncio
import threading
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

    def encode_batch(self, batch, attention, pooling, normalize):
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


def run_with_watchdog(scenario, timeout_s: float = 20.0, **overrides):
    """`run` on a daemon thread: a batcher that blocks its event loop fails the test instead of
    hanging the suite."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["result"] = run(scenario, **overrides)
        except BaseException as error:  # reported below
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), f"the batcher's event loop was still blocked after {timeout_s} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def test_an_input_cancelled_in_the_batchers_own_loop_turn_never_blocks_the_loop() -> None:
    # The oldest queued input is cancelled while the batcher is in the middle of a step, so its
    # Future's drop callback is still pending when the batcher looks at the queue again. Before
    # the fix the batcher took that input as the oldest, found nothing to run (it was done) and
    # looped without ever awaiting: the callback never ran and the event loop was blocked.
    async def scenario(batcher, encoder):
        first = batcher.submit([[1]], DENSE)
        stale = batcher.submit([[2]], DENSE)[0]
        histogram = batcher.metrics.inference_duration

        class CancelWhileObserving:
            def labels(self, *values):
                stale.cancel()  # synchronous, inside the batcher's step
                return histogram.labels(*values)

        batcher.metrics.inference_duration = CancelWhileObserving()
        await asyncio.sleep(0)
        done = await results(first)
        batcher.metrics.inference_duration = histogram
        later = await results(batcher.submit([[3]], BLOCK))
        return done, later, batcher

    (done, later, batcher), encoder, _ = run_with_watchdog(scenario, max_batch_size=1)
    assert done[0].embedding.tolist() == expected([1])
    assert later[0].embedding.tolist() == expected([3])
    assert [batch for batch, _ in encoder.batches] == [[[1]], [[3]]]
    assert batcher.queued == 0 and batcher.queue_count == 0


def test_short_and_long_inputs_take_turns_so_neither_waits_for_the_other_lane() -> None:
    # Three long inputs (cost 1000, each its own forward pass) queued before three short
    # requests: the lanes alternate, so a short request waits for at most one long pass and the
    # long request keeps moving under a stream of short ones.
    async def scenario(batcher, encoder):
        long = batcher.submit([[10], [11], [12]], DENSE, costs=[1000] * 3)
        short = [batcher.submit([[index]], DENSE, costs=[1]) for index in (1, 2, 3)]
        return await results(long + [future for request in short for future in request])

    outputs, encoder, _ = run(scenario, short_input_cost=100, max_batch_cost=1000)
    assert [batch for batch, _ in encoder.batches] == [
        [[1], [2], [3]],  # the short lane goes first and batches its three requests
        [[10]],
        [[11]],
        [[12]],
    ]
    assert all(not isinstance(outcome, BaseException) for outcome in outputs)


def test_lanes_alternate_under_a_stream_of_short_requests() -> None:
    async def scenario(batcher, encoder):
        long = batcher.submit([[10], [11]], DENSE, costs=[1000] * 2)
        short = [batcher.submit([[index]], DENSE, costs=[1]) for index in (1, 2, 3)]
        return await results(long + [future for request in short for future in request])

    _, encoder, _ = run(scenario, short_input_cost=100, max_batch_cost=1000, max_batch_size=1)
    assert [batch[0][0] for batch, _ in encoder.batches] == [1, 10, 2, 11, 3]


def test_max_batch_cost_bounds_the_token_pairs_of_one_forward_pass() -> None:
    async def scenario(batcher, encoder):
        return await results(batcher.submit([[1], [2], [3], [4]], DENSE, costs=[40, 40, 40, 90]))

    _, encoder, _ = run(scenario, max_batch_cost=100)
    assert [batch for batch, _ in encoder.batches] == [[[1], [2]], [[3]], [[4]]]


def test_queues_of_distinct_batch_keys_are_released_once_empty() -> None:
    # Every distinct attention parameter is its own batch key: none may leave a queue behind.
    async def scenario(batcher, encoder):
        futures = []
        for size in range(1, 201):
            key = BatchKey(AttentionSpec("block", block_size=size), "mean", True)
            futures += batcher.submit([[size]], key)
        futures[-1].cancel()
        await results(futures[:-1])
        await asyncio.sleep(0)
        return batcher.queue_count, batcher.queued

    (queue_count, queued), _, _ = run(scenario, queue_size=1000)
    assert (queue_count, queued) == (0, 0)
