"""ModernBERT (gte-modernbert, modernbert-embed): pre-LayerNorm, RoPE, GeGLU, no biases, and
layers that alternate a local sliding window (`local_attention`, 128 tokens) with global ones.

transformers' mask: local layers see |i - j| <= local_attention // 2, which is sparse_core's
`sliding_window` with window = local_attention. Global layers use `global_rope_theta`
(160,000), local ones `local_rope_theta` (10,000).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.arch.base import Architecture, WeightNames, linear, norm, per_layer
from models.arch.rope import rope_theta
from models.config import EncoderConfig

LAYER_KINDS = ("full_attention", "sliding_attention")


def local_layers(raw: Mapping[str, Any], num_layers: int) -> tuple[bool, ...]:
    """Per layer, whether it is local: from `layer_types`, else every layer but each n-th."""
    kinds = raw.get("layer_types")
    if kinds is None:
        every = raw.get("global_attn_every_n_layers", 3)
        return tuple(bool(index % every) for index in range(num_layers))
    unknown = sorted(set(kinds) - set(LAYER_KINDS))
    if unknown:
        raise ValueError(f"layer_types {unknown} are not supported; allowed: {LAYER_KINDS}")
    return tuple(kind == "sliding_attention" for kind in kinds)


def read_config(raw: Mapping[str, Any]) -> EncoderConfig:
    num_layers = raw.get("num_hidden_layers", 22)
    length = raw.get("max_position_embeddings", 8192)
    return EncoderConfig(
        model_type="modernbert",
        vocab_size=raw.get("vocab_size", 50368),
        hidden_size=raw.get("hidden_size", 768),
        num_hidden_layers=num_layers,
        num_attention_heads=raw.get("num_attention_heads", 12),
        intermediate_size=raw.get("intermediate_size", 1152),
        hidden_act=raw.get("hidden_activation", "gelu"),
        max_position_embeddings=length,
        type_vocab_size=0,
        layer_norm_eps=raw.get("norm_eps", 1e-5),
        pad_token_id=raw.get("pad_token_id", 50283),
        positions="rotary",
        rope_theta=rope_theta(raw, "full_attention", "global_rope_theta", 160_000.0),
        local_rope_theta=rope_theta(raw, "sliding_attention", "local_rope_theta", 10_000.0),
        norm_placement="pre",
        norm_bias=raw.get("norm_bias", False),
        first_attention_norm=False,
        final_norm=True,
        attention_bias=raw.get("attention_bias", False),
        feed_forward="glu",
        glu_activated=0,  # act(input) * gate, input first
        mlp_up_bias=raw.get("mlp_bias", False),
        mlp_down_bias=raw.get("mlp_bias", False),
        local_layers=local_layers(raw, num_layers),
        local_window=raw.get("local_attention", 128),
        trained_length=length,
    )


def weight_names(config: EncoderConfig) -> WeightNames:
    layer = "layers.{}"
    names: WeightNames = {
        **linear("embeddings.tokens", "embeddings.tok_embeddings", bias=False),
        **norm("embeddings.norm", "embeddings.norm", config.norm_bias),
        **per_layer(
            config,
            {
                **norm("layers.{}.attention_norm", f"{layer}.attn_norm", config.norm_bias),
                **linear("layers.{}.attention.qkv", f"{layer}.attn.Wqkv", config.attention_bias),
                **linear("layers.{}.attention.output", f"{layer}.attn.Wo", config.attention_bias),
                **norm("layers.{}.ffn_norm", f"{layer}.mlp_norm", config.norm_bias),
                **linear("layers.{}.ffn.up", f"{layer}.mlp.Wi", config.mlp_up_bias),
                **linear("layers.{}.ffn.down", f"{layer}.mlp.Wo", config.mlp_down_bias),
            },
        ),
        **norm("final_norm", "final_norm", config.norm_bias),
    }
    # Layer 0 reads the embeddings' output directly: no attention norm.
    first = "layers.0.attention_norm."
    return {local: hf for local, hf in names.items() if not local.startswith(first)}


MODERNBERT = Architecture(
    name="modernbert",
    read_config=read_config,
    weight_names=weight_names,
    prefixes=("model.",),
    unused=("head.", "decoder.", "classifier.", "drop."),
    tied={"embeddings.tok_embeddings.weight": ("decoder.weight",)},
)
