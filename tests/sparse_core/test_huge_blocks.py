"""A block size far beyond the input costs what one block of the input's length costs: the
executor never pads a 3-token input to a block of 2²⁰ tokens (a request could stall the
server that way), and the result is the rule's."""

from __future__ import annotations

import pytest
import torch

from sparse_core import MODES, AttentionSpec, attend, reference_attend

LARGEST = 1 << 20


@pytest.mark.parametrize(
    "mode",
    [name for name, mode in MODES.items() if any(p.name == "block_size" for p in mode.params)],
)
def test_the_largest_block_size_on_a_short_padded_batch_is_cheap_and_exact(mode) -> None:
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 8, generator=generator) for _ in range(3))
    lengths = torch.tensor([5, 3])
    params = {"block_size": LARGEST}
    if mode == "fixed":
        params["summary"] = 1
    spec = AttentionSpec(mode, **params)
    out = attend(q, k, v, spec, lengths)  # before the fix: terabytes for routing and bigbird
    expected = reference_attend(q, k, v, spec, lengths)
    for b, length in enumerate(lengths.tolist()):
        torch.testing.assert_close(out[b, :, :length], expected[b, :, :length], atol=1e-5, rtol=0)
