"""`topk` (top_k=k): each query attends to its k highest-scoring valid keys (exact)."""

from __future__ import annotations

import math

import torch

from sparse_core._exact_topk import topk_selection
from sparse_core.dense import sequence_sdpa
from sparse_core.float64 import masked_softmax_attention
from sparse_core.mode import Mode, Param, quadratic_cost
from sparse_core.spec import AttentionSpec

# Scores held at once, in elements (128 MiB in float32): a chunk of query rows × all n keys × all
# heads of one sequence. Bounds the extra memory at O(chunk·n); big enough that each chunk's dozens
# of tensor ops are large and their fixed per-op cost is amortised.
SCORE_BUDGET = 1 << 25
# Gathered value rows held at once, in elements (16 MiB in float32). Temporaries this small are
# recycled by the C allocator; much larger ones are fresh mappings that page-fault in every chunk.
PICK_BUDGET = 1 << 22
# Weighting the values: "gather" picks each row's k value rows by index (c·k·D elements a head,
# within PICK_BUDGET, so the chunk shrinks as k grows); "scatter" writes the k weights into the
# zeroed score rows and multiplies by all n values in one GEMM (c·n·D multiply-adds a head, chunk
# set by SCORE_BUDGET alone). Scatter when top_k · SCATTER_RATIO >= n. Measured on 2 busy CPU
# cores (H=12, D=32): the two break even near k = n/64 at n = 16384; at n = 4096 scatter takes
# 1.1-1.2× gather's time at k = n/64 and 0.6× at k = n/2.
SCATTER_RATIO = 64


def topk_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax over each query's `spec.top_k` best-scoring valid keys. Returns (B, H, n, D).

    One sequence at a time, over its valid tokens only: an input's result does not depend on
    the batch it came in (a rounding difference could swap near-tied keys), and padding costs
    nothing. top_k >= a sequence's valid keys is plain attention over them. Rows of padded
    queries come out as zeros.
    """
    batch, _, n, _ = q.shape
    valid = [n] * batch if lengths is None else lengths.clamp(0, n).tolist()
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    for b, length in enumerate(valid):
        out[b, :, length:] = 0  # padded query rows
        if length:
            rows = slice(0, length)
            out[b, :, rows] = sequence_topk(q[b, :, rows], k[b, :, rows], v[b, :, rows], spec.top_k)
    return out


def sequence_topk(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, top_k: int) -> torch.Tensor:
    """Top-k attention of one unpadded sequence; q, k, v: (H, n, D). Returns (H, n, D).

    Loops over chunks of query rows so that at most ~SCORE_BUDGET scores exist at once (O(chunk·n)
    memory, never n²). The softmax reuses the selected scores; the values are gathered by index
    for small k, or weighted by one GEMM with the weights scattered into the score buffer for
    larger k (see SCATTER_RATIO). Scores and softmax run in float32 for half-precision inputs.
    """
    heads, n, head_dim = q.shape
    if top_k >= n:
        return sequence_sdpa(q, k, v)
    compute = torch.promote_types(q.dtype, torch.float32)
    keys_t = k.to(compute).transpose(-2, -1).contiguous()  # (H, D, n): GEMM-friendly layout
    values = v.to(compute).contiguous()  # (H, n, D)
    scale = 1.0 / math.sqrt(head_dim)
    scatter = top_k * SCATTER_RATIO >= n
    # Rows per chunk: scores within SCORE_BUDGET; for gather, c·k·D picked values in PICK_BUDGET.
    chunk = min(n, SCORE_BUDGET // (heads * n))
    if not scatter:
        chunk = min(chunk, PICK_BUDGET // (heads * top_k * head_dim))
        values = values.view(heads * n, head_dim)  # row h·n + j
        first_row = (torch.arange(heads, device=q.device) * n).view(heads, 1, 1)
    chunk = max(1, chunk)
    # One buffer for every chunk's scores: fresh multi-MB allocations would each page-fault in.
    buffer = torch.empty(heads * chunk * n, dtype=compute, device=q.device)
    select = topk_selection(buffer.device, buffer.dtype)
    out = torch.empty((heads, n, head_dim), dtype=compute, device=q.device)
    for start in range(0, n, chunk):
        rows = slice(start, min(n, start + chunk))
        scores = buffer[: heads * (rows.stop - start) * n].view(heads, -1, n)
        torch.matmul(q[:, rows].to(compute) * scale, keys_t, out=scores)  # (H, c, n)
        top_scores, top_keys = select(scores, top_k)  # (H, c, k) each
        weights = torch.softmax(top_scores, dim=-1)  # (H, c, k)
        if scatter:  # the score buffer becomes the (H, c, n) weights, zero off the top k
            weights = scores.zero_().scatter_(-1, top_keys, weights)
            torch.matmul(weights, values, out=out[:, rows])  # (H, c, D)
        else:
            picked = values.index_select(0, (top_keys + first_row).flatten())
            picked = picked.view(*top_keys.shape, head_dim)  # (H, c, k, D)
            out[:, rows] = (weights.unsqueeze(-2) @ picked).squeeze(-2)  # (H, c, D)
    return out


def topk_reference(
    spec: AttentionSpec, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """float64 formula on one sequence, (H, L, D): softmax over each row's top_k scores."""
    length = k.shape[-2]
    if spec.top_k >= length:
        return masked_softmax_attention(q, k, v, None)
    scores = q @ k.transpose(-2, -1)  # (H, L, L)
    chosen = scores.topk(spec.top_k, dim=-1).indices
    allowed = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, chosen, True)
    return masked_softmax_attention(q, k, v, allowed)


MODE = Mode(
    name="topk",
    params=(Param("top_k", help="keys kept per query, by score"),),
    kernel=topk_attention,
    cost=quadratic_cost,
    reference=topk_reference,
    description="each query keeps its top_k keys by score; O(n²) scores, O(chunk·n) memory",
    pairwise=True,
)
