"""The position table read beyond its learned length: copy (tile) and interpolate (squeeze)."""

from __future__ import annotations

import pytest
import torch

from models import EncoderConfig, load_encoder
from models.positions import CopiedPositions, InterpolatedPositions
from sparse_core import AttentionSpec
from tests.models.conftest import long_text


def table(kind: type, model_type: str = "bert") -> torch.nn.Module:
    config = EncoderConfig(
        model_type=model_type,
        hidden_size=4,
        num_attention_heads=1,
        max_position_embeddings=10,
        pad_token_id=1 if model_type == "roberta" else 0,
    )
    positions = kind(config)
    positions.weight.data = torch.randn(config.max_position_embeddings, 4)
    return positions


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_copy_tiles_the_learned_rows(model_type: str) -> None:
    positions = table(CopiedPositions, model_type)
    learned = positions.weight[positions.offset :]  # RoBERTa: rows 0, 1 belong to padding
    assert learned.shape[0] == positions.max_positions == (10 if model_type == "bert" else 8)
    out = positions(25, None)[0]  # (25, hidden)
    for p in range(25):
        torch.testing.assert_close(out[p], learned[p % positions.max_positions])


def test_interpolate_squeezes_long_inputs_onto_the_table() -> None:
    positions = table(InterpolatedPositions)  # 10 learned rows
    lengths = torch.tensor([19, 7])
    out = positions(19, lengths)  # (2, 19, hidden)
    rows = positions.weight
    # length 19: position p reads row p·9/18 = p/2
    torch.testing.assert_close(out[0, 0], rows[0])
    torch.testing.assert_close(out[0, 4], rows[2])
    torch.testing.assert_close(out[0, 5], (rows[2] + rows[3]) / 2)
    torch.testing.assert_close(out[0, 18], rows[9])
    # length 7 fits: exactly the learned rows, whatever the padded width
    torch.testing.assert_close(out[1, :7], rows[:7])


def test_interpolate_depends_on_the_inputs_length_not_on_padding() -> None:
    positions = table(InterpolatedPositions)
    alone = positions(15, None)[0]
    padded = positions(40, torch.tensor([15]))[0, :15]
    torch.testing.assert_close(alone, padded)


def test_strategies_agree_within_and_differ_beyond_the_table(encoder) -> None:
    interpolating = load_encoder(device="cpu", position_extension="interpolate")
    (ids,) = encoder.tokenize([long_text()], max_tokens=900)
    dense = AttentionSpec("dense")
    short, long = ids[:300] + ids[-1:], ids
    copy_short, copy_long = encoder.encode_ids([short, long], dense)
    interp_short, interp_long = interpolating.encode_ids([short, long], dense)
    torch.testing.assert_close(copy_short, interp_short, atol=1e-6, rtol=0)
    assert torch.dot(copy_long, interp_long) < 0.9999  # a different reading beyond 512


def test_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="allowed: copy, interpolate"):
        load_encoder(device="cpu", position_extension="rope")


def test_interpolate_blends_in_float32_and_rounds_once() -> None:
    """A bfloat16 table reads the float32 blend of its rows, rounded once to bfloat16 (a blend
    weight rounded to bfloat16 would be off by up to 2^-9)."""
    positions = table(InterpolatedPositions)
    exact = table(InterpolatedPositions)
    positions.weight.data = positions.weight.data.bfloat16()
    exact.weight.data = positions.weight.data.float()
    lengths = torch.tensor([1000])  # p·9/999: blend weights that bfloat16 cannot hold
    out = positions(1000, lengths)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, exact(1000, lengths).bfloat16())
