"""The batcher plans the forward passes that run: nothing downstream re-splits its batches."""

from __future__ import annotations

import asyncio

import torch

from app.batcher import Batcher, BatchKey, BatchLimits
from app.metrics import Metrics
from models import load_encoder
from sparse_core import AttentionSpec


def test_a_planned_batch_of_mixed_lengths_runs_as_exactly_one_forward_pass() -> None:
    encoder = load_encoder(device="cpu", dtype="float32")
    passes: list[tuple[int, ...]] = []
    encoder.model.register_forward_hook(lambda module, args, output: passes.append(args[0].shape))
    # 32 inputs from 3 to 600 tokens: 19,200 padded tokens, above the encoder's own grouping
    # budget, and lengths far apart; the batcher's budget admits them all in one batch.
    lengths = [3 + (index * 597) // 31 for index in range(32)]
    batch = [[101] + [1000 + index] * (length - 2) + [102] for index, length in enumerate(lengths)]
    limits = BatchLimits(
        max_batch_tokens=32 * 600, max_batch_size=32, batch_wait_s=0.0, queue_size=64
    )
    metrics = Metrics()
    key = BatchKey(AttentionSpec("sliding_window", window=64), "mean", True)

    async def scenario() -> list[torch.Tensor]:
        batcher = Batcher(encoder, limits, metrics)
        batcher.start()
        try:
            costs = [key.attention.cost(len(ids)) for ids in batch]  # all in the short lane
            futures = batcher.submit(batch, key, costs)
            return [encoded.embedding for encoded in await asyncio.gather(*futures)]
        finally:
            await batcher.close()

    embeddings = asyncio.run(scenario())
    assert passes == [(32, 600)]
    sample = metrics.registry.get_sample_value
    assert sample("longenc_batch_size_count", {"mode": "sliding_window"}) == 1
    assert sample("longenc_batch_size_sum", {"mode": "sliding_window"}) == 32
    assert sample("longenc_batch_tokens_sum", {"mode": "sliding_window"}) == 32 * 600
    alone = encoder.encode_ids([batch[5]], key.attention)[0]
    torch.testing.assert_close(embeddings[5], alone, atol=1e-5, rtol=0)
