"""`performer` (features=m, seed, default 0) — kernelized linear attention (FAVOR+, positive
orthogonal random features): φ(x) = exp(Wx' - |x'|²/2) / √m with x' = x / D^(1/4) and W the
m×D orthogonal random projection drawn from `seed`; out_i = Σ_j φ(q_i)·φ(k_j) v_j /
Σ_j φ(q_i)·φ(k_j) over valid keys, computed as φ(Q)(φ(K)ᵀV) in O(n·m·D). An unbiased
estimate of dense attention, not equal to it.
"""

from __future__ import annotations

import functools

import torch

from sparse_core.mode import MAX_FEATURES, MAX_SEED, Mode, Param
from sparse_core.spec import AttentionSpec

# Rows per chunk: the (H, rows, m) feature maps of a chunk stay a few MB.
CHUNK_ROWS = 512


@functools.lru_cache(maxsize=16)
def projection(seed: int, features: int, head_dim: int) -> torch.Tensor:
    """(m, D) float64 W on the CPU, a pure function of its arguments: blocks of D orthogonal
    rows (QR of a Gaussian matrix), each row rescaled to the norm of a Gaussian vector, so that
    every row is marginally N(0, I) as FAVOR+ needs, and rows within a block are orthogonal."""
    generator = torch.Generator().manual_seed(seed)
    blocks = []
    for _ in range(-(-features // head_dim)):
        gaussian = torch.randn(head_dim, head_dim, generator=generator, dtype=torch.float64)
        orthogonal, _ = torch.linalg.qr(gaussian)
        blocks.append(orthogonal.T)  # rows orthonormal
    rows = torch.cat(blocks)[:features]  # (m, D)
    norms = torch.randn(features, head_dim, generator=generator, dtype=torch.float64).norm(dim=-1)
    return rows * norms[:, None]


def performer_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, H, n, D) -> (B, H, n, D), one sequence at a time over its valid keys; padded rows
    zero. float32 arithmetic for half-precision inputs."""
    batch, _, n, head_dim = q.shape
    valid = [n] * batch if lengths is None else lengths.clamp(0, n).tolist()
    compute = torch.promote_types(q.dtype, torch.float32)
    weights = projection(spec.seed, spec.features, head_dim).to(q.device, compute)
    out = torch.zeros(q.shape, dtype=q.dtype, device=q.device)
    for b, length in enumerate(valid):
        if length:
            rows = slice(0, length)
            out[b, :, rows] = sequence_performer(
                q[b, :, rows], k[b, :, rows], v[b, :, rows], weights
            )
    return out


def sequence_performer(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """FAVOR+ on one sequence, (H, L, D) each, W: (m, D) in the compute dtype (float32 for
    half-precision inputs, which are converted a chunk at a time). Returns (H, L, D) in q's
    dtype.

    In chunks of CHUNK_ROWS rows, so that the (H, rows, m) feature maps, m/D times larger than
    q, stay in cache instead of streaming through memory (the kernel is memory-bound otherwise).
    Stabilised: exp never sees a positive argument. For keys a constant, the running largest
    Wk' - |k'|²/2 (sums so far are rescaled when it grows), is subtracted: a common factor of
    numerator and denominator. For queries the term -|q'|²/2 and the row's largest Wq' are
    per-row factors, which cancel in the ratio, so they are subtracted too; so does 1/√m.
    The values carry a column of ones, so that one GEMM gives φ(K)ᵀV and φ(K)ᵀ1 together, and
    one more φ(Q)'s numerators and denominators.
    """
    heads, length, head_dim = q.shape
    compute = weights.dtype
    features = weights.shape[0]
    scale = head_dim**-0.25
    projection_t = (weights.T * scale).expand(heads, head_dim, features)  # (H, D, m): W x'
    # φ(K)ᵀ[V | 1]: the last column is the normaliser φ(K)ᵀ1, from the same GEMM
    summary = weights.new_zeros(heads, features, head_dim + 1)  # (H, m, D + 1)
    largest = torch.full((heads, 1, 1), float("-inf"), dtype=compute, device=q.device)
    values = torch.empty(
        (heads, min(length, CHUNK_ROWS), head_dim + 1), dtype=compute, device=q.device
    )
    values[..., head_dim] = 1
    for start in range(0, length, CHUNK_ROWS):
        keys = k[:, start : start + CHUNK_ROWS].to(compute)  # (H, c, D)
        rows = keys.shape[1]
        half_norm = keys.square().sum(-1, keepdim=True).mul_(-0.5 * scale * scale)  # -|k'|²/2
        logits = torch.baddbmm(half_norm, keys, projection_t)  # (H, c, m)
        grown = torch.maximum(largest, logits.amax(dim=(-2, -1), keepdim=True))
        rescale = (largest - grown).exp_()  # 0 on the first chunk (exp(-inf))
        largest = grown
        weights_k = logits.sub_(largest).exp_()
        values[:, :rows, :head_dim] = v[:, start : start + CHUNK_ROWS]
        summary.mul_(rescale).baddbmm_(weights_k.transpose(-2, -1), values[:, :rows])
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    tiny = torch.finfo(compute).tiny
    for start in range(0, length, CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        logits = torch.bmm(q[:, rows].to(compute), projection_t)  # (H, c, m)
        weights_q = logits.sub_(logits.amax(dim=-1, keepdim=True)).exp_()
        summed = torch.bmm(weights_q, summary)  # (H, c, D + 1): numerator and denominator
        out[:, rows] = summed[..., :head_dim] / summed[..., head_dim:].clamp_(min=tiny)
    return out


def performer_reference(
    spec: AttentionSpec, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """float64 formula on one sequence, (H, L, D): the n×n kernel matrix φ(Q)φ(K)ᵀ, unstabilised."""
    head_dim = q.shape[-1]
    weights = projection(spec.seed, spec.features, head_dim).to(q.device)
    features = spec.features

    def phi(x: torch.Tensor) -> torch.Tensor:
        x = x / head_dim**0.25
        return torch.exp(x @ weights.T - x.square().sum(-1, keepdim=True) / 2) / features**0.5

    kernel = phi(q) @ phi(k).transpose(-2, -1)  # (H, L, L)
    return (kernel @ v) / kernel.sum(dim=-1, keepdim=True)


def performer_cost(spec: AttentionSpec, length: int) -> int:
    return length * spec.features


MODE = Mode(
    name="performer",
    params=(
        Param("features", maximum=MAX_FEATURES, help="random features m (FAVOR+)"),
        Param("seed", minimum=0, maximum=MAX_SEED, default=0, help="seed of the random projection"),
    ),
    kernel=performer_attention,
    cost=performer_cost,
    reference=performer_reference,
    description="FAVOR+ linear attention with features positive orthogonal random features; O(n·m)",
)
