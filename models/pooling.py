"""Pooling of final hidden states into embeddings: mean over valid tokens, [CLS], the last
valid token, or none."""

from __future__ import annotations

import torch
import torch.nn.functional as F

POOLINGS = ("mean", "cls", "last", "none")


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; allowed: {', '.join(POOLINGS)}")
    return pooling


def pool(
    hidden: torch.Tensor, lengths: torch.Tensor, pooling: str, normalize: bool
) -> torch.Tensor:
    """hidden: (B, n, dim) with rows past lengths[b] padded; returns float32 rows on its device.

    "mean", "cls" and "last" give (B, dim); "none" gives (sum of lengths, dim), every input's
    valid tokens in input order. Padded rows never reach the result, even where they hold NaN or
    inf. With normalize, every returned row has unit L2 norm.
    """
    hidden = hidden.float()  # pool in float32 whatever the model's dtype
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    valid = positions[None, :] < lengths[:, None]  # (B, n)
    if pooling == "none":
        vectors = hidden[valid]  # (sum of lengths, dim)
    elif pooling == "cls":
        vectors = hidden[:, 0]  # (B, dim)
    elif pooling == "last":
        last = (lengths - 1).to(hidden.device)  # (B,) each input's last valid position
        vectors = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, dim)
    else:
        # masked_fill, not a product: 0 · NaN would carry a padded row's NaN into the sum
        vectors = hidden.masked_fill(~valid[..., None], 0.0).sum(dim=1) / lengths[:, None]
    return F.normalize(vectors, dim=-1) if normalize else vectors
