"""Padded batches: row-wise layers run on the real tokens only, attention on the padded grid."""

from __future__ import annotations

import pytest
import torch

from models import Encoder
from models.modules import TokenRows
from sparse_core import AttentionSpec


def test_pack_takes_the_real_rows_in_order_and_unpack_puts_them_back() -> None:
    lengths = torch.tensor([3, 1, 2])
    grid = torch.full((3, 3, 2), float("nan"))  # padded positions poisoned
    real = [(0, 0), (0, 1), (0, 2), (1, 0), (2, 0), (2, 1)]
    for value, (row, position) in enumerate(real):
        grid[row, position] = float(value)
    rows = TokenRows(3, 3, lengths)
    packed = rows.pack(grid)  # (6, 2)
    torch.testing.assert_close(packed, torch.arange(6.0)[:, None].expand(6, 2))
    restored = rows.unpack(packed)  # (3, 3, 2)
    for row, length in enumerate(lengths.tolist()):
        torch.testing.assert_close(restored[row, :length], grid[row, :length])
        assert (restored[row, length:] == 0).all()


def test_without_padding_pack_and_unpack_are_views() -> None:
    grid = torch.randn(2, 4, 3)
    rows = TokenRows(2, 4, None)
    packed = rows.pack(grid)
    assert packed.shape == (8, 3) and packed.data_ptr() == grid.data_ptr()
    assert rows.unpack(packed).data_ptr() == grid.data_ptr()


@pytest.mark.parametrize("sizes", [[7, 4, 6], [7, 7, 7]])
def test_projections_and_ffn_see_only_real_tokens(
    encoder: Encoder, sizes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # hooks see the eager pass; the graph runs its operations (tests/models/test_graph.py)
    monkeypatch.setattr(encoder, "graphs", None)
    seen: list[int] = []
    layer = encoder.model.layers[0]
    hooks = [
        module.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape[0]))
        for module in (layer.attention.qkv, layer.attention.output, layer.ffn.up)
    ]
    batch = [[101] + [2023] * (size - 2) + [102] for size in sizes]
    try:
        encoder.forward_group(batch, AttentionSpec("dense"), "mean", True)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen == [sum(sizes)] * 3


def test_hidden_states_are_zero_at_padding_and_match_each_input_alone(encoder: Encoder) -> None:
    sizes = [9, 3, 6]
    batch = [[101] + list(range(2000, 2000 + size - 2)) + [102] for size in sizes]
    spec = AttentionSpec("sliding_window", window=4)
    ids = torch.tensor([ids + [0] * (9 - len(ids)) for ids in batch])
    with torch.inference_mode():
        hidden = encoder.model(ids, spec, torch.tensor(sizes))  # (3, 9, dim)
        for row, token_ids in enumerate(batch):
            alone = encoder.model(torch.tensor([token_ids]), spec)[0]  # (size, dim)
            torch.testing.assert_close(hidden[row, : sizes[row]], alone, atol=1e-5, rtol=1e-4)
            assert (hidden[row, sizes[row] :] == 0).all()
