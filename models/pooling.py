"""Pooling of final hidden states into embeddings: mean over valid tokens, [CLS], or none."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

POOLINGS = ("mean", "cls", "none")
# sentence-transformers modules that longenc runs; a folder listing another (Dense...) is refused.
SENTENCE_MODULES = ("Transformer", "Pooling", "Normalize")


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; allowed: {', '.join(POOLINGS)}")
    return pooling


def pool(
    hidden: torch.Tensor, lengths: torch.Tensor, pooling: str, normalize: bool
) -> torch.Tensor:
    """hidden: (B, n, dim) with rows past lengths[b] padded; returns float32 rows on its device.

    "mean" and "cls" give (B, dim); "none" gives (sum of lengths, dim), every input's valid tokens
    in input order. Padded rows never reach the result, even where they hold NaN or inf. With
    normalize, every returned row has unit L2 norm.
    """
    hidden = hidden.float()  # pool in float32 whatever the model's dtype
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    valid = positions[None, :] < lengths[:, None]  # (B, n)
    if pooling == "none":
        vectors = hidden[valid]  # (sum of lengths, dim)
    elif pooling == "cls":
        vectors = hidden[:, 0]  # (B, dim)
    else:
        # masked_fill, not a product: 0 · NaN would carry a padded row's NaN into the sum
        vectors = hidden.masked_fill(~valid[..., None], 0.0).sum(dim=1) / lengths[:, None]
    return F.normalize(vectors, dim=-1) if normalize else vectors


def read_sentence_config(folder: Path) -> tuple[str, bool]:
    """(default pooling, default normalize) from a sentence-transformers folder.

    Pooling is "mean" or "cls" as 1_Pooling/config.json says, "cls" when absent; normalize is
    whether modules.json lists a Normalize module.
    """
    modules_file = folder / "modules.json"
    modules = json.loads(modules_file.read_text()) if modules_file.is_file() else []
    kinds = [module["type"].rsplit(".", 1)[-1] for module in modules]
    unsupported = [kind for kind in kinds if kind not in SENTENCE_MODULES]
    if unsupported:
        raise ValueError(
            f"{modules_file} lists {', '.join(unsupported)}, which longenc does not run; "
            f"allowed modules: {', '.join(SENTENCE_MODULES)}"
        )
    pooling_dirs = [m.get("path") for m in modules if m["type"].endswith("Pooling")]
    pooling_file = folder / (pooling_dirs[0] if pooling_dirs else "1_Pooling") / "config.json"
    return read_pooling(pooling_file), "Normalize" in kinds


def read_pooling(file: Path) -> str:
    if not file.is_file():
        return "cls"
    settings = json.loads(file.read_text())
    mode = settings.get("pooling_mode")  # newer sentence-transformers write the mode by name
    if mode in ("mean", "cls"):
        return mode
    if settings.get("pooling_mode_mean_tokens"):
        return "mean"
    if settings.get("pooling_mode_cls_token"):
        return "cls"
    raise ValueError(f"{file}: pooling {settings} is not supported; allowed: mean, cls")
