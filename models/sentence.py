"""A folder's sentence-transformers settings: pooling, normalization and named prompts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# sentence-transformers modules that longenc runs; a folder listing another (Dense...) is refused.
SENTENCE_MODULES = ("Transformer", "Pooling", "Normalize")
# 1_Pooling/config.json flag -> longenc pooling, in sentence-transformers' order of precedence.
POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_lasttoken": "last",
}
POOLING_NAMES = {"cls": "cls", "mean": "mean", "lasttoken": "last"}


@dataclass
class SentenceConfig:
    pooling: str = "cls"  # what a folder without 1_Pooling gets (BERT's [CLS])
    normalize: bool = False
    prompts: dict[str, str] = field(default_factory=dict)  # name -> text prepended to inputs
    default_prompt_name: str | None = None  # applied when a call names no prompt


def read_sentence_config(folder: Path) -> SentenceConfig:
    """Read modules.json, the Pooling module's config.json and config_sentence_transformers.json.

    Pooling is the Pooling module's mode ("cls" when absent); normalize is whether modules.json
    lists a Normalize module; prompts and default_prompt_name as sentence-transformers reads them.
    Raises ValueError for a module or pooling mode longenc does not run.
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
    prompts, default = read_prompts(folder / "config_sentence_transformers.json")
    return SentenceConfig(read_pooling(pooling_file), "Normalize" in kinds, prompts, default)


def read_pooling(file: Path) -> str:
    if not file.is_file():
        return "cls"
    settings = json.loads(file.read_text())
    mode = settings.get("pooling_mode")  # newer sentence-transformers write the mode by name
    if mode in POOLING_NAMES:
        return POOLING_NAMES[mode]
    chosen = [pooling for flag, pooling in POOLING_FLAGS.items() if settings.get(flag)]
    if mode is None and len(chosen) == 1:
        return chosen[0]
    raise ValueError(
        f"{file}: pooling {settings} is not supported; allowed: one of mean, cls, lasttoken"
    )


def read_prompts(file: Path) -> tuple[dict[str, str], str | None]:
    """(prompts, default prompt name) from config_sentence_transformers.json, if present."""
    if not file.is_file():
        return {}, None
    settings = json.loads(file.read_text())
    prompts = settings.get("prompts") or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
        raise ValueError(f"{file}: prompts must map names to strings")
    default = settings.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise ValueError(
            f"{file}: default_prompt_name {default!r} is not one of the prompts "
            f"({', '.join(prompts) or 'none'})"
        )
    return dict(prompts), default
