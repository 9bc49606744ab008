"""`EncoderConfig`: a BERT-family encoder's architecture, read from a Hugging Face config.json."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

# model_type -> how position ids are numbered. BERT counts from 0; RoBERTa-style models reserve
# table rows 0..padding_idx, so their first real position is row padding_idx + 1.
MODEL_TYPES: dict[str, str] = {
    "bert": "bert",
    "roberta": "roberta",
    "xlm-roberta": "roberta",
    "camembert": "roberta",
}


@dataclass
class EncoderConfig:
    model_type: str = "bert"
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    # derived in __post_init__
    head_dim: int = field(init=False)
    position_offset: int = field(init=False)  # table row of position 0
    max_positions: int = field(init=False)  # native positions: the learned table minus the offset

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ValueError(
                f"model_type {self.model_type!r} is not supported; "
                f"allowed: {', '.join(MODEL_TYPES)}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        self.head_dim = self.hidden_size // self.num_attention_heads
        roberta_style = MODEL_TYPES[self.model_type] == "roberta"
        self.position_offset = self.pad_token_id + 1 if roberta_style else 0
        self.max_positions = self.max_position_embeddings - self.position_offset
        if self.max_positions < 1:
            raise ValueError(
                f"max_position_embeddings {self.max_position_embeddings} leaves no positions after "
                f"the offset {self.position_offset}"
            )

    @classmethod
    def from_file(cls, path: Path) -> EncoderConfig:
        """Read config.json; keys that do not describe the encoder's shape are ignored."""
        raw = json.loads(Path(path).read_text())
        position_type = raw.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ValueError(
                f"{path}: position_embedding_type {position_type!r} is not supported; "
                "allowed: 'absolute'"
            )
        names = {f.name for f in fields(cls) if f.init}
        return cls(**{k: v for k, v in raw.items() if k in names and v is not None})
