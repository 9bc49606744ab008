"""BERT, RoBERTa, XLM-RoBERTa (CamemBERT): post-LayerNorm, learned positions, GELU MLP.

RoBERTa-style models differ only in position numbering (see EncoderConfig.position_offset);
XLM-R checkpoints with 8,194 positions (bge-m3) load the same way, often sharded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.arch.base import Architecture, WeightNames, linear, norm, per_layer
from models.config import EncoderConfig

KEYS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "pad_token_id",
)


def read_config(raw: Mapping[str, Any]) -> EncoderConfig:
    position_type = raw.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(
            f"position_embedding_type {position_type!r} is not supported for "
            f"{raw.get('model_type')!r}; allowed: 'absolute'"
        )
    return EncoderConfig(**{key: raw[key] for key in KEYS if raw.get(key) is not None})


def weight_names(config: EncoderConfig) -> WeightNames:
    layer = "encoder.layer.{}"
    attention = f"{layer}.attention.self"
    return {
        **linear("embeddings.tokens", "embeddings.word_embeddings", bias=False),
        **linear("embeddings.positions", "embeddings.position_embeddings", bias=False),
        **linear("embeddings.token_types", "embeddings.token_type_embeddings", bias=False),
        **norm("embeddings.norm", "embeddings.LayerNorm"),
        **per_layer(
            config,
            {
                **linear(
                    "layers.{}.attention.qkv",
                    (f"{attention}.query", f"{attention}.key", f"{attention}.value"),
                    bias=True,
                ),
                **linear("layers.{}.attention.output", f"{layer}.attention.output.dense", True),
                **norm("layers.{}.attention_norm", f"{layer}.attention.output.LayerNorm"),
                **linear("layers.{}.ffn.up", f"{layer}.intermediate.dense", bias=True),
                **linear("layers.{}.ffn.down", f"{layer}.output.dense", bias=True),
                **norm("layers.{}.ffn_norm", f"{layer}.output.LayerNorm"),
            },
        ),
    }


BERT = Architecture(
    name="bert",
    read_config=read_config,
    weight_names=weight_names,
    prefixes=("bert.", "roberta."),
    unused=("embeddings.position_ids", "embeddings.token_type_ids", "pooler.", "cls.", "lm_head."),
    renames={"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"},
    tied={
        "embeddings.word_embeddings.weight": (
            "cls.predictions.decoder.weight",
            "lm_head.decoder.weight",
        )
    },
)
