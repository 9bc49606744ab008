"""`threshold` (threshold=τ, float, 0 < τ <= 1) — threshold sparsification: query i attends key j
iff s_ij >= max_j' s_ij' + ln τ (its weight is at least τ times the row's largest), softmax over
those. τ = 1 keeps the maximum and its ties."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from sparse_core import _native
from sparse_core.float64 import masked_softmax_attention
from sparse_core.mode import Mode, Param, quadratic_cost
from sparse_core.spec import AttentionSpec

# Scores held at once, in elements: chunks of query rows × all n keys, of one head or several.
# CPU: 4 MiB in float32, so that a chunk's passes stay in cache. Elsewhere (CUDA): 256 MiB, so
# that a 16k-token sequence takes 48 chunks instead of 3,072 (each chunk is six kernel launches,
# and a GPU waits on launches long before it runs out of memory bandwidth).
SCORE_BUDGET = 1 << 20
DEVICE_SCORE_BUDGET = 1 << 26


def threshold_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, H, n, D) -> (B, H, n, D), one sequence at a time over its valid tokens (batch
    invariant); rows of padded queries are zeros. O(n²) time, O(chunk·n) memory."""
    batch, _, n, _ = q.shape
    valid = [n] * batch if lengths is None else lengths.clamp(0, n).tolist()
    out = torch.zeros(q.shape, dtype=q.dtype, device=q.device)
    for b, length in enumerate(valid):
        if length:
            rows = slice(0, length)
            out[b, :, rows] = sequence_threshold(
                q[b, :, rows], k[b, :, rows], v[b, :, rows], spec.threshold
            )
    return out


def sequence_threshold(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Threshold attention of one unpadded sequence; q, k, v: (H, L, D) -> (H, L, D).

    Per chunk of queries (of one head, or of several heads where the budget holds them): the
    scores as keys × queries (on CPU that GEMM, keys @ chunkᵀ, ran about 3× faster at 16k than
    chunk @ keysᵀ, which writes the same scores as short wide rows; see the README), then each
    query's weights exp(s - max) where s >= max + ln τ (the max's weight 1 always survives), 0
    elsewhere, written over the scores, with their sums; then one GEMM with the values. On CPU
    chunks of about SCORE_BUDGET scores stay in cache and the weights come from the C++ kernel
    (`_threshold_columns.cpp`: two passes) where it is built.
    float32 arithmetic for half-precision inputs.
    """
    heads, length, head_dim = q.shape
    compute = torch.promote_types(q.dtype, torch.float32)
    keys = k.to(compute)
    values = v.to(compute)
    queries = q.to(compute) * (1.0 / math.sqrt(head_dim))
    weigh = column_weights(q.device, compute, threshold)
    budget = SCORE_BUDGET if q.device.type == "cpu" else DEVICE_SCORE_BUDGET
    chunk = max(16, min(length, budget // length))
    together = max(1, min(heads, budget // (chunk * length)))  # heads per chunk
    buffer = torch.empty(together * chunk * length, dtype=compute, device=q.device)
    out = torch.empty((heads, length, head_dim), dtype=compute, device=q.device)
    for first in range(0, heads, together):
        group = slice(first, min(heads, first + together))
        for start in range(0, length, chunk):
            rows = slice(start, min(length, start + chunk))
            shape = (group.stop - group.start, length, rows.stop - start)
            scores = buffer[: shape[0] * length * shape[2]].view(shape)  # (h, keys, queries)
            torch.matmul(keys[group], queries[group, rows].transpose(-2, -1), out=scores)
            sums = weigh(scores)  # (h, queries)
            summed = torch.matmul(scores.transpose(-2, -1), values[group])
            out[group, rows] = summed.div_(sums.unsqueeze(-1))
    return out.to(q.dtype)


def column_weights(
    device: torch.device, dtype: torch.dtype, threshold: float
) -> Callable[[torch.Tensor], torch.Tensor]:
    """(h, keys, queries) scores -> each query's weight sum (h, queries), the scores overwritten
    in place by their threshold weights: the C++ kernel for float32 on CPU where it is built,
    torch ops otherwise (five passes over the scores instead of two)."""
    native = (
        _native.threshold_columns() if device.type == "cpu" and dtype == torch.float32 else None
    )
    if native is not None:
        log_cut = math.log(threshold)
        return lambda scores: native(scores, log_cut)
    # weight >= τ for float weights: greater than the float just below τ (threshold_ keeps >)
    cut = torch.tensor(threshold, dtype=dtype)
    below_cut = float(torch.nextafter(cut, torch.zeros((), dtype=dtype)))

    def weigh(scores: torch.Tensor) -> torch.Tensor:
        scores -= scores.amax(dim=-2, keepdim=True)  # each query's max becomes 0
        return F.threshold_(scores.exp_(), below_cut, 0.0).sum(dim=-2)

    return weigh


def threshold_reference(
    spec: AttentionSpec, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """float64 formula on one sequence, (H, L, D)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (H, L, L)
    allowed = scores >= scores.amax(dim=-1, keepdim=True) + math.log(spec.threshold)
    return masked_softmax_attention(q, k, v, allowed)


MODE = Mode(
    name="threshold",
    params=(
        Param(
            "threshold",
            kind=float,
            minimum=0.0,
            maximum=1.0,
            exclusive_minimum=True,
            example=0.01,
            help="keep keys whose weight is at least this fraction of the row's largest",
        ),
    ),
    kernel=threshold_attention,
    cost=quadratic_cost,
    reference=threshold_reference,
    description="keys whose softmax weight is >= threshold × the row's largest; O(n²)",
    pairwise=True,
)
