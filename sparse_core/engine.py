"""Running a mask mode: build its pattern, then FlexAttention on CUDA, else the mode's own CPU
kernel for one sequence if it has one, else the CPU block-sparse executor."""

from __future__ import annotations

from collections.abc import Callable

import torch

from sparse_core._sequences import each_sequence
from sparse_core.executor import run_pattern
from sparse_core.flex import flex_applies, flex_pattern, valid_lengths
from sparse_core.mode import PatternFactory
from sparse_core.spec import AttentionSpec

# sequence(q, k, v, length, out): a mode's CPU kernel for one sequence's (H, n, D) rows,
# writing rows [0, length) of out (H, n, D) in place
SequenceKernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, torch.Tensor], None]


def attend_pattern(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    lengths: torch.Tensor | None,
    factory: PatternFactory,
    content_based: bool = False,
    sequence: SequenceKernel | None = None,
) -> torch.Tensor:
    """(B, H, n, D) attention of the pattern `factory` builds for `spec`. Returns (B, H, n, D);
    padded query rows are zeros on CPU.

    content_based: the pattern reads q and k (routing), so its FlexAttention mask is never
    reused between calls (see `sparse_core.flex.reuse_block_masks`). sequence: the mode's own
    CPU kernel, run one sequence at a time instead of the executor.
    """
    if flex_applies(q):
        key = None if content_based else spec
        return flex_pattern(q, k, v, lambda full: factory(spec, full, q, k), lengths, reuse_key=key)
    if sequence is not None:
        return each_sequence(
            q, lengths, lambda b, length, out: sequence(q[b], k[b], v[b], length, out)
        )
    batch, _, n, _ = q.shape
    full = valid_lengths(lengths, batch, n, q.device)
    return run_pattern(q, k, v, factory(spec, full, q, k), full)
