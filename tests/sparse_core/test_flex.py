"""The FlexAttention path (CUDA's), checked on CPU: eager flex_attention with the BlockMask built
from each mask mode's block lists against the oracle, and how many graphs dynamo compiles."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch._dynamo.testing import CompileCounter
from torch.nn.attention.flex_attention import flex_attention

from sparse_core import MODES, AttentionSpec, attend, reference_attend, reuse_block_masks
from sparse_core.flex import BLOCK, compiled_flex_attention, flex_pattern, pattern_block_mask
from sparse_core.patterns import Band
from tests.sparse_core.helpers import (
    TOLERANCE,
    assert_close_on_valid_rows,
    make_lengths,
    make_qkv,
)

SPECS = [
    AttentionSpec("dense"),
    AttentionSpec("block", block_size=48),
    AttentionSpec("sliding_window", window=2),
    AttentionSpec("sliding_window", window=300),
    AttentionSpec("global_window", window=64, global_tokens=3),
    AttentionSpec("dilated", window=8, dilation=3),
    AttentionSpec("strided", stride=7),
    AttentionSpec("strided", stride=300),
    AttentionSpec("fixed", block_size=20, summary=4),
    AttentionSpec("bigbird", block_size=16),
    AttentionSpec("bigbird", block_size=128, window_blocks=1, global_blocks=1, random_blocks=1),
    AttentionSpec("routing", block_size=32, blocks=2),
]


def run_eager(q, k, v, spec, lengths):
    batch, _, n, _ = q.shape
    full = torch.full((batch,), n) if lengths is None else lengths
    pattern = MODES[spec.mode].pattern(spec, full, q, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager flex_attention warns that it is not compiled
        return flex_pattern(q, k, v, pattern, lengths, flex=flex_attention)


# eager flex evaluates mask_mod on all n² pairs under vmap: small sizes keep the suite quick
@pytest.mark.parametrize(
    ("n", "lengths_kind"), [(1, "ragged"), (97, "ragged"), (300, "none"), (300, "ragged")]
)
@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_eager_flex_with_the_block_mask_matches_reference(spec, n, lengths_kind):
    """The BlockMask's lists and its mask_mod (eager flex evaluates it on every listed block,
    and on the indices past n in the last block) give the oracle's result."""
    q, k, v = make_qkv(n, torch.float32)
    lengths = make_lengths(n, lengths_kind)
    out = run_eager(q, k, v, spec, lengths)
    expected = reference_attend(q, k, v, spec, lengths)
    assert_close_on_valid_rows(out, expected, lengths, TOLERANCE[torch.float32])


def test_eager_flex_at_a_long_length_with_two_lengths():
    """n = 4099 (33 blocks, the last one short), batch 2 of lengths n and n/3, one head."""
    n = 4099
    spec = AttentionSpec("bigbird", block_size=64)
    q, k, v = make_qkv(n, torch.float32, heads=1)
    lengths = make_lengths(n, "ragged")
    out = run_eager(q, k, v, spec, lengths)
    expected = reference_attend(q, k, v, spec, lengths)
    assert_close_on_valid_rows(out, expected, lengths, TOLERANCE[torch.float32])


def test_block_mask_of_a_window_is_narrow_and_skips_mask_mod_inside():
    """n = 4099, w = 512: each query block lists at most 1 + 2·⌈256/128⌉ kv blocks, and the
    ones wholly inside the window go to the full lists, where mask_mod is not evaluated."""
    n, half = 4099, 256
    lengths = torch.tensor([n, 1366])
    mask = pattern_block_mask(Band(1, half, torch.device("cpu")), lengths, n)
    per_query_block = mask.kv_num_blocks + mask.full_kv_num_blocks  # (B, 1, nb)
    assert int(per_query_block.max()) <= 1 + 2 * (half // BLOCK)
    assert mask.kv_indices.shape[-1] < -(-n // BLOCK)
    assert int(mask.full_kv_num_blocks.max()) >= 1
    # the second sequence's last block is cut by its length: partial, never full
    last = (1366 - 1) // BLOCK
    full_rows = mask.full_kv_indices[1, 0, :, :][
        torch.arange(mask.full_kv_indices.shape[-1]) < mask.full_kv_num_blocks[1, 0, :, None]
    ]
    assert last not in full_rows.tolist()


# (batch, n, window): mixed batch sizes, lengths (multiples of 128 or not) and windows.
WARM_UP = [(2, 1000, 64), (1, 1000, 512)]  # one batch > 1, one batch of 1: no size coincidences
MIXED = [
    (3, 517, 2),
    (4, 260, 30),
    (5, 700, 256),
    (1, 129, 6),
    (2, 384, 100),
    (6, 200, 2),
    (1, 900, 1024),
    (2, 129, 4000),
    (3, 640, 300),
]


def test_mixed_shapes_and_windows_reuse_the_compiled_graphs():
    """Dynamo compiles one graph for batch 1 and one for larger batches (it specializes size 1),
    then no more for new lengths or windows: the window and lengths reach the kernel as tensors
    and sizes are dynamic. Recompiling per shape would, after torch's recompile limit, fall back
    to the unfused implementation that materializes n² scores. The eager backend stands in for
    inductor on CPU; the CUDA test runs inductor."""
    counter = CompileCounter()
    flex = compiled_flex_attention(counter)
    heads = 4
    for seed, (batch, n, window) in enumerate(WARM_UP + MIXED):
        generator = torch.Generator().manual_seed(seed)
        q, k, v = (torch.randn(batch, heads, n, 16, generator=generator) for _ in range(3))
        lengths = torch.randint(1, n + 1, (batch,), generator=generator)
        lengths[0] = n
        pattern = Band(1, window // 2, q.device)
        out = flex_pattern(q, k, v, pattern, lengths, flex=flex)
        spec = AttentionSpec("sliding_window", window=window)
        expected = reference_attend(q, k, v, spec, lengths)
        assert_close_on_valid_rows(out, expected, lengths, TOLERANCE[torch.float32])
        if seed == len(WARM_UP) - 1:
            assert counter.frame_count == 2
    assert counter.frame_count == 2, "a new length or window recompiled flex_attention"


def test_every_mask_pattern_compiles_its_own_graphs_past_torchs_recompile_limit():
    """Seven mask patterns × two dtypes × batch 1 and 2 need 28 graphs. Torch's default limit of
    8 was reached by the fourth pattern, after which flex_attention ran uncompiled on every call,
    materializing n² scores (at 64k tokens more memory than a GPU has)."""
    counter = CompileCounter()
    flex = compiled_flex_attention(counter)
    specs = [
        AttentionSpec("sliding_window", window=64),
        AttentionSpec("global_window", window=64, global_tokens=3),
        AttentionSpec("dilated", window=8, dilation=3),
        AttentionSpec("strided", stride=7),
        AttentionSpec("fixed", block_size=20, summary=4),
        AttentionSpec("bigbird", block_size=16),
        AttentionSpec("routing", block_size=32, blocks=2),
    ]
    combos = [(d, s, b) for d in (torch.float32, torch.bfloat16) for s in specs for b in (1, 2)]
    for dtype, spec, batch in combos:
        generator = torch.Generator().manual_seed(batch)
        q, k, v = (torch.randn(batch, 2, 200, 16, generator=generator) for _ in range(3))
        lengths = torch.full((batch,), 200)
        pattern = MODES[spec.mode].pattern(spec, lengths, q, k)
        out = flex_pattern(q.to(dtype), k.to(dtype), v.to(dtype), pattern, lengths, flex=flex)
        expected = reference_attend(q, k, v, spec, lengths)
        assert_close_on_valid_rows(out.float(), expected, lengths, TOLERANCE[dtype])
    assert counter.frame_count == len(combos)


def test_inside_reuse_block_masks_each_spec_builds_its_mask_once(monkeypatch):
    """The CUDA dispatch run on CPU (flex_applies forced, eager flex): three calls per spec over
    one lengths tensor, as the layers of a forward pass make, build one BlockMask per fixed
    pattern and one per call for routing, whose pattern reads q and k; every output matches the
    oracle. A new lengths tensor, or a call outside the context, builds again."""
    import sparse_core.flex

    for module in ("engine", "sliding_window"):
        monkeypatch.setattr(f"sparse_core.{module}.flex_applies", lambda q: True)
    monkeypatch.setattr(sparse_core.flex, "compiled_flex_attention", lambda: flex_attention)
    builds: list[str] = []
    build = sparse_core.flex.pattern_block_mask

    def counted(pattern, lengths, n):
        builds.append(type(pattern).__name__)
        return build(pattern, lengths, n)

    monkeypatch.setattr(sparse_core.flex, "pattern_block_mask", counted)
    specs = [
        AttentionSpec("sliding_window", window=64),
        AttentionSpec("bigbird", block_size=32),
        AttentionSpec("routing", block_size=32, blocks=2),
    ]
    q, k, v = make_qkv(300, torch.float32)
    lengths = make_lengths(300, "ragged")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager flex_attention warns that it is not compiled
        with reuse_block_masks():
            for spec in specs:
                for _ in range(3):
                    out = attend(q, k, v, spec, lengths)
                    expected = reference_attend(q, k, v, spec, lengths)
                    assert_close_on_valid_rows(out, expected, lengths, TOLERANCE[torch.float32])
            assert len(builds) == 1 + 1 + 3
            attend(q, k, v, specs[0], lengths.clone())
            assert len(builds) == 6
        attend(q, k, v, specs[0], lengths)
    assert len(builds) == 7
