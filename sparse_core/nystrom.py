"""`nystrom` (landmarks=m) — low-rank landmark attention (Nyströmformer, the training-free member
of the Linformer family): q̃, k̃ = means of q and k over m contiguous segments of the valid
tokens, segment x covering [⌊x·L/m⌋, ⌊(x+1)·L/m⌋);
out = softmax(q k̃ᵀ/√d) · pinv(softmax(q̃ k̃ᵀ/√d)) · softmax(q̃ kᵀ/√d) · v, with an exact
pseudo-inverse. m >= L means dense.
"""

from __future__ import annotations

import math

import torch

from sparse_core.dense import sequence_sdpa
from sparse_core.mode import MAX_FEATURES, Mode, Param
from sparse_core.spec import AttentionSpec

# Rows per chunk of the L-long factors: their (H, rows, m) pieces stay a few MB.
CHUNK_ROWS = 1024


def nystrom_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, H, n, D) -> (B, H, n, D), one sequence at a time over its valid tokens; padded rows
    zero."""
    batch, _, n, _ = q.shape
    valid = [n] * batch if lengths is None else lengths.clamp(0, n).tolist()
    out = torch.zeros(q.shape, dtype=q.dtype, device=q.device)
    for b, length in enumerate(valid):
        if not length:
            continue
        rows = slice(0, length)
        qb, kb, vb = q[b, :, rows], k[b, :, rows], v[b, :, rows]
        if spec.landmarks >= length:
            out[b, :, rows] = sequence_sdpa(qb, kb, vb)
        else:
            out[b, :, rows] = sequence_nystrom(qb, kb, vb, spec.landmarks)
    return out


def segment_means(x: torch.Tensor, landmarks: int) -> torch.Tensor:
    """(H, L, D) -> (H, m, D) float64: the means over segments [⌊s·L/m⌋, ⌊(s+1)·L/m⌋), m <= L.

    Position p lies in segment ((p + 1)·m - 1) // L. Summed in float64 CHUNK_ROWS rows at a
    time, so that no float64 copy of the whole sequence is made.
    """
    heads, length, head_dim = x.shape
    positions = torch.arange(length, device=x.device)
    segment = ((positions + 1) * landmarks - 1) // length  # (L,)
    sums = torch.zeros(heads, landmarks, head_dim, dtype=torch.float64, device=x.device)
    for start in range(0, length, CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        sums.index_add_(1, segment[rows], x[:, rows].to(torch.float64))
    bounds = torch.arange(landmarks + 1, device=x.device) * length // landmarks  # (m + 1,)
    return sums / (bounds[1:] - bounds[:-1]).to(torch.float64)[:, None]


def sequence_nystrom(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, landmarks: int
) -> torch.Tensor:
    """Nyström attention of one unpadded sequence, (H, L, D) each, m < L. Returns (H, L, D)
    in q's dtype.

    float64 throughout: the pseudo-inverse of softmax(q̃ k̃ᵀ) is often ill-conditioned (segment
    means of unrelated tokens are alike), and it multiplies the rounding error of the factors
    around it by its norm. At O(L·m·D) the cost stays far below dense attention's. The L-long
    factors are taken CHUNK_ROWS rows at a time (softmax(q̃ kᵀ) with an online softmax over key
    chunks), so that their (H, rows, m) pieces stay in cache.
    """
    heads, length, head_dim = q.shape
    scale = 1.0 / math.sqrt(head_dim)
    query_landmarks = segment_means(q, landmarks)  # (H, m, D)
    key_landmarks = segment_means(k, landmarks)
    kernel = torch.softmax(query_landmarks @ key_landmarks.transpose(-2, -1) * scale, dim=-1)
    # right = softmax(q̃ kᵀ) v, accumulated over key chunks with a running max per landmark
    largest = torch.full((heads, landmarks, 1), float("-inf"), dtype=torch.float64, device=q.device)
    weighted = torch.zeros(heads, landmarks, head_dim, dtype=torch.float64, device=q.device)
    total = torch.zeros(heads, landmarks, 1, dtype=torch.float64, device=q.device)
    for start in range(0, length, CHUNK_ROWS):
        keys = k[:, start : start + CHUNK_ROWS].to(torch.float64)  # (H, c, D)
        scores = query_landmarks @ keys.transpose(-2, -1) * scale  # (H, m, c)
        grown = torch.maximum(largest, scores.amax(dim=-1, keepdim=True))
        rescale = (largest - grown).exp()
        largest = grown
        weights = (scores - largest).exp_()
        values = v[:, start : start + CHUNK_ROWS].to(torch.float64)
        weighted = weighted * rescale + weights @ values
        total = total * rescale + weights.sum(dim=-1, keepdim=True)
    middle = torch.linalg.pinv(kernel) @ (weighted / total)  # (H, m, D)
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    key_landmarks_t = key_landmarks.transpose(-2, -1).contiguous() * scale  # (H, D, m)
    for start in range(0, length, CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        left = torch.softmax(q[:, rows].to(torch.float64) @ key_landmarks_t, dim=-1)  # (H, c, m)
        out[:, rows] = (left @ middle).to(q.dtype)
    return out


def nystrom_reference(
    spec: AttentionSpec, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """float64 formula on one sequence, (H, L, D), the three factors multiplied left to right."""
    length, scale = q.shape[-2], 1.0 / math.sqrt(q.shape[-1])
    if spec.landmarks >= length:
        return torch.softmax(q @ k.transpose(-2, -1) * scale, dim=-1) @ v
    bounds = [x * length // spec.landmarks for x in range(spec.landmarks + 1)]
    q_tilde, k_tilde = (
        torch.stack(
            [t[:, lo:hi].mean(dim=-2) for lo, hi in zip(bounds, bounds[1:], strict=False)], dim=-2
        )
        for t in (q, k)
    )
    left = torch.softmax(q @ k_tilde.transpose(-2, -1) * scale, dim=-1)  # (H, L, m)
    kernel = torch.softmax(q_tilde @ k_tilde.transpose(-2, -1) * scale, dim=-1)  # (H, m, m)
    right = torch.softmax(q_tilde @ k.transpose(-2, -1) * scale, dim=-1)  # (H, m, L)
    return left @ torch.linalg.pinv(kernel) @ right @ v


def nystrom_cost(spec: AttentionSpec, length: int) -> int:
    return length * min(length, spec.landmarks)


MODE = Mode(
    name="nystrom",
    params=(
        Param("landmarks", maximum=MAX_FEATURES, help="segment means m; m >= length is dense"),
    ),
    kernel=nystrom_attention,
    cost=nystrom_cost,
    reference=nystrom_reference,
    description="Nyström low-rank attention over landmarks segment means; O(n·m)",
)
