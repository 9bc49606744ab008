"""Alibaba GTE v1.5 and gte-multilingual (`new`, transformers' `gte`): BERT's post-LayerNorm with
RoPE, a fused QKV projection with biases, and a GeGLU feed-forward (value half first, gate
half second; no bias on the up projection).

GTE's `rope_scaling: {"type": "ntk", "factor": f}` is a fixed (not dynamic) NTK scaling, as its
modeling code applies it: base·f, then every frequency divided by f^(2/d).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.arch.base import Architecture, WeightNames, linear, norm, per_layer
from models.arch.rope import rope_theta
from models.config import EncoderConfig


def ntk_factor(raw: Mapping[str, Any]) -> float | None:
    scaling = raw.get("rope_scaling")
    if not scaling:
        return None
    if scaling.get("type") != "ntk" or scaling.get("mixed_b") is not None:
        raise ValueError(f"rope_scaling {scaling} is not supported; allowed: fixed 'ntk'")
    return float(scaling["factor"])


def read_config(raw: Mapping[str, Any]) -> EncoderConfig:
    for key, allowed in (
        ("position_embedding_type", "rope"),
        ("layer_norm_type", "layer_norm"),
        ("logn_attention_scale", False),
        ("pack_qkv", True),
    ):
        if raw.get(key, allowed) != allowed:
            raise ValueError(f"GTE {key}={raw[key]!r} is not supported; allowed: {allowed!r}")
    length = raw.get("max_position_embeddings", 8192)
    return EncoderConfig(
        model_type=raw["model_type"],
        vocab_size=raw["vocab_size"],
        hidden_size=raw["hidden_size"],
        num_hidden_layers=raw["num_hidden_layers"],
        num_attention_heads=raw["num_attention_heads"],
        intermediate_size=raw["intermediate_size"],
        hidden_act=raw.get("hidden_act", "gelu"),
        max_position_embeddings=length,
        type_vocab_size=raw.get("type_vocab_size", 0),
        layer_norm_eps=raw.get("layer_norm_eps", 1e-12),
        pad_token_id=raw.get("pad_token_id") or 0,
        positions="rotary",
        rope_theta=rope_theta(raw, None, "rope_theta", 10_000.0),
        rope_ntk_factor=ntk_factor(raw),
        feed_forward="glu",
        glu_activated=1,
        mlp_up_bias=False,
        trained_length=length,
    )


def weight_names(config: EncoderConfig) -> WeightNames:
    layer = "encoder.layer.{}"
    attention = f"{layer}.attention"
    names: WeightNames = {
        **linear("embeddings.tokens", "embeddings.word_embeddings", bias=False),
        **norm("embeddings.norm", "embeddings.LayerNorm"),
        **per_layer(
            config,
            {
                **linear("layers.{}.attention.qkv", f"{attention}.qkv_proj", bias=True),
                **linear("layers.{}.attention.output", f"{attention}.o_proj", bias=True),
                **norm("layers.{}.attention_norm", f"{layer}.attn_ln"),
                **linear("layers.{}.ffn.up", f"{layer}.mlp.up_gate_proj", bias=False),
                **linear("layers.{}.ffn.down", f"{layer}.mlp.down_proj", bias=True),
                **norm("layers.{}.ffn_norm", f"{layer}.mlp_ln"),
            },
        ),
    }
    if config.type_vocab_size:
        names.update(linear("embeddings.token_types", "embeddings.token_type_embeddings", False))
    return names


GTE = Architecture(
    name="gte",
    read_config=read_config,
    weight_names=weight_names,
    prefixes=("new.", "gte."),
    unused=("pooler.", "lm_head.", "classifier.", "embeddings.position_ids"),
)
