"""Running a mask mode: build its pattern, then FlexAttention on CUDA or the CPU executor."""

from __future__ import annotations

import torch

from sparse_core.executor import run_pattern
from sparse_core.flex import flex_applies, flex_pattern
from sparse_core.mode import PatternFactory
from sparse_core.spec import AttentionSpec


def attend_pattern(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    lengths: torch.Tensor | None,
    factory: PatternFactory,
    content_based: bool = False,
) -> torch.Tensor:
    """(B, H, n, D) attention of the pattern `factory` builds for `spec`. Returns (B, H, n, D).

    content_based: the pattern reads q and k (routing), so its FlexAttention mask is never
    reused between calls (see `sparse_core.flex.reuse_block_masks`).
    """
    if flex_applies(q):
        key = None if content_based else spec
        return flex_pattern(q, k, v, lambda full: factory(spec, full, q, k), lengths, reuse_key=key)
    batch, _, n, _ = q.shape
    if lengths is None:
        lengths = torch.full((batch,), n, dtype=torch.int64, device=q.device)
    lengths = lengths.to(q.device, torch.int64).clamp(0, n)
    return run_pattern(q, k, v, factory(spec, lengths, q, k), lengths)
