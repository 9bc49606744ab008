"""jina-embeddings-v3 without its LoRA task adapters: XLM-R with RoPE (base 20,000) in place of
the position table, a fused QKV projection, post-LayerNorm and a GELU MLP, all with biases.

The published checkpoint stores each adapted weight as a parametrization (`...weight.original`
plus per-task `lora_A`/`lora_B`); the base weight is read and the adapters are skipped, which is
what transformers' JinaEmbeddingsV3Model runs. Reads transformers' `jina_embeddings_v3` config and
jina's own (`xlm-roberta` with `position_embedding_type: rotary`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.arch.base import Architecture, WeightNames, linear, norm, per_layer
from models.arch.rope import rope_theta
from models.config import EncoderConfig


def read_config(raw: Mapping[str, Any]) -> EncoderConfig:
    length = raw.get("max_position_embeddings", 8194)
    return EncoderConfig(
        model_type="jina_embeddings_v3",
        vocab_size=raw["vocab_size"],
        hidden_size=raw["hidden_size"],
        num_hidden_layers=raw["num_hidden_layers"],
        num_attention_heads=raw["num_attention_heads"],
        intermediate_size=raw["intermediate_size"],
        hidden_act=raw.get("hidden_act", "gelu"),
        max_position_embeddings=length,
        type_vocab_size=raw.get("type_vocab_size", 1),
        layer_norm_eps=raw.get("layer_norm_eps", 1e-5),
        pad_token_id=raw.get("pad_token_id", 1),
        positions="rotary",
        rope_theta=rope_theta(raw, None, "rotary_emb_base", 20_000.0),
        trained_length=length,
    )


def weight_names(config: EncoderConfig) -> WeightNames:
    layer = "encoder.layers.{}"
    names: WeightNames = {
        **linear("embeddings.tokens", "embeddings.word_embeddings", bias=False),
        **norm("embeddings.norm", "emb_ln"),
        **per_layer(
            config,
            {
                **linear("layers.{}.attention.qkv", f"{layer}.mixer.Wqkv", bias=True),
                **linear("layers.{}.attention.output", f"{layer}.mixer.out_proj", bias=True),
                **norm("layers.{}.attention_norm", f"{layer}.norm1"),
                **linear("layers.{}.ffn.up", f"{layer}.mlp.fc1", bias=True),
                **linear("layers.{}.ffn.down", f"{layer}.mlp.fc2", bias=True),
                **norm("layers.{}.ffn_norm", f"{layer}.norm2"),
            },
        ),
    }
    if config.type_vocab_size:
        names.update(linear("embeddings.token_types", "embeddings.token_type_embeddings", False))
    return names


JINA = Architecture(
    name="jina_embeddings_v3",
    read_config=read_config,
    weight_names=weight_names,
    prefixes=("roberta.",),
    unused=("pooler.", "lm_head.", "classifier.", "embeddings.position_ids"),
    renames={".parametrizations.weight.original": ".weight"},
    unused_parts=(".parametrizations.weight.0.",),  # LoRA adapters: lora_A, lora_B per task
)
