"""The supported architectures, one module each, chosen by config.json's `model_type`.

from models.arch import read_config
config, architecture = read_config(folder / "config.json")
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from models.arch.base import Architecture
from models.arch.bert import BERT
from models.arch.gte import GTE
from models.arch.jina import JINA
from models.arch.modernbert import MODERNBERT
from models.arch.nomic_bert import NOMIC_BERT
from models.config import EncoderConfig

# model_type -> architecture. "new" is GTE's remote-code name, "gte" transformers' own.
ARCHITECTURES: dict[str, Architecture] = {
    "bert": BERT,
    "roberta": BERT,
    "xlm-roberta": BERT,
    "camembert": BERT,
    "modernbert": MODERNBERT,
    "nomic_bert": NOMIC_BERT,
    "new": GTE,
    "gte": GTE,
    "jina_embeddings_v3": JINA,
}


def architecture_of(raw: Mapping[str, Any]) -> Architecture:
    """The architecture of a parsed config.json; ValueError naming the supported model types."""
    model_type = raw.get("model_type")
    if model_type == "xlm-roberta" and raw.get("position_embedding_type") == "rotary":
        return JINA  # jina-embeddings-v3's own config: XLM-R with RoPE
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"model_type {model_type!r} is not supported; allowed: {', '.join(ARCHITECTURES)}"
        )
    return ARCHITECTURES[model_type]


def read_config(path: Path) -> tuple[EncoderConfig, Architecture]:
    """Read config.json into an EncoderConfig through its architecture's reader.

    Raises ValueError (with the file named) for an unsupported architecture or option.
    """
    raw = json.loads(Path(path).read_text())
    try:
        architecture = architecture_of(raw)
        return architecture.read_config(raw), architecture
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path}: missing or malformed field {error}") from error
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


__all__ = ["ARCHITECTURES", "Architecture", "architecture_of", "read_config"]
