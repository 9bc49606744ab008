"""`strided` (stride=l) — Sparse Transformer's strided pattern in both directions:
|i - j| < l, or (i - j) mod l == 0.

On CPU the keys of row i are two disjoint sets: the band |i - j| < l, and the other members of
its residue class mod l (j ≡ i, j ≠ i: the only class member within the band is i itself). The
band runs as the tiled sliding window; each class is plain attention among its ⌈L / l⌉ members
with the diagonal masked, on strided views of q, k and v (no copy), every class of a length in
one SDPA call; the two are merged by their log-sum-exp (`sparse_core._lse`). So the work is
L·(2l - 1) + L²/l pairs, the allowed ones, instead of every key block a column falls in. On
CUDA, FlexAttention runs the pattern's block lists.
"""

from __future__ import annotations

import torch

from sparse_core._lse import merge_, sdpa_lse
from sparse_core._views import class_view
from sparse_core._window_tiles import MASK_BUDGET
from sparse_core.dense import sequence_sdpa
from sparse_core.engine import attend_pattern
from sparse_core.executor import DEFAULT_BLOCK
from sparse_core.mode import Mode, Param
from sparse_core.pattern import Pattern
from sparse_core.patterns import Strided
from sparse_core.sliding_window import band_sequence
from sparse_core.spec import AttentionSpec

# Query rows of all classes in one class-attention call (with the heads): bounds its output and
# the merge's temporaries at a few MB.
CLASS_ROWS = 1 << 15


def strided_pattern(
    spec: AttentionSpec, lengths: torch.Tensor, q: torch.Tensor, k: torch.Tensor
) -> Pattern:
    return Strided(spec.stride, q.device)


def strided_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, H, n, D) -> (B, H, n, D): band and residue classes on CPU, O(L·(l + L/l)); padded
    rows zero. On CUDA the block-sparse lists, where the strided columns fall in every key block
    when l <= the block size (then it costs n²), in about 2n/l blocks per query block otherwise."""
    return attend_pattern(
        q, k, v, spec, lengths, strided_pattern,
        sequence=lambda qb, kb, vb, length, out: sequence_strided(
            qb, kb, vb, length, spec.stride, out
        ),
    )  # fmt: skip


def sequence_strided(
    qb: torch.Tensor,
    kb: torch.Tensor,
    vb: torch.Tensor,
    length: int,
    stride: int,
    out: torch.Tensor,
) -> None:
    """Writes rows [0, length) of `out` (H, n, D) for one sequence's (H, n, D) qb, kb, vb."""
    if stride == 1 or stride >= length:  # every key in the band or the class: dense
        out[:, :length] = sequence_sdpa(qb[:, :length], kb[:, :length], vb[:, :length])
        return
    lse = torch.empty(qb.shape[:2], dtype=torch.float32, device=qb.device)  # (H, n)
    band_sequence(qb, kb, vb, length, stride - 1, out, lse)
    heads = qb.shape[0]
    span = -(-length // stride)  # members of the longer classes
    longer = length - (span - 1) * stride  # classes 0 .. longer - 1 hold `span` members
    for first, count, size in ((0, longer, span), (longer, stride - longer, span - 1)):
        if count == 0 or size < 2:  # a class of one member has no key beyond the band
            continue
        # rows a call takes: all `size` of a class while classes fit CLASS_ROWS, else a slice
        rows_per_call = max(1, min(size, CLASS_ROWS // heads, MASK_BUDGET // size))
        classes_per_call = max(1, CLASS_ROWS // (heads * rows_per_call))
        keys, values = (class_view(t, first, count, size, stride) for t in (kb, vb))
        queries = class_view(qb, first, count, size, stride)  # (H, count, size, D)
        results, results_lse = (
            class_view(out, first, count, size, stride),
            class_view(lse, first, count, size, stride),
        )
        for row in range(0, size, rows_per_call):
            rows = slice(row, min(size, row + rows_per_call))
            positions = torch.arange(rows.start, rows.stop, device=qb.device)[:, None]
            mask = positions != torch.arange(size, device=qb.device)  # (rows, size): j ≠ i
            for group in range(0, count, classes_per_call):
                picked = slice(group, min(count, group + classes_per_call))
                part, part_lse = sdpa_lse(
                    queries[:, picked, rows], keys[:, picked], values[:, picked], mask=mask
                )
                merge_(results[:, picked, rows], results_lse[:, picked, rows], part, part_lse)


def strided_cost(spec: AttentionSpec, length: int) -> int:
    """Listed blocks' pairs: the local band, plus the key blocks the strided columns fall in."""
    size, stride = DEFAULT_BLOCK, spec.stride
    local = min(length, 2 * stride + 2 * size)
    columns = length if stride <= size else min(length, 2 * (-(-length // stride) + 1) * size)
    return min(length * length, length * (local + columns))


MODE = Mode(
    name="strided",
    params=(Param("stride", help="local span l (|i - j| < l) and column stride"),),
    kernel=strided_attention,
    cost=strided_cost,
    pattern=strided_pattern,
    description="Sparse Transformer strided: |i - j| < stride, or i - j a multiple of stride",
)
