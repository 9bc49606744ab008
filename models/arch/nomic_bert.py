"""NomicBert (nomic-embed-text v1/v1.5): BERT's post-LayerNorm with RoPE (base 1,000), a fused
QKV projection, SwiGLU and no biases; trained at 2,048 tokens.

Reads both config spellings: nomic's own (GPT-2 keys: n_embd, n_layer, rotary_emb_fraction...)
and transformers' (hidden_size, rope_parameters...). Checkpoints use nomic's tensor names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.arch.base import Architecture, WeightNames, linear, norm, per_layer
from models.arch.rope import rope_theta
from models.config import EncoderConfig

# nomic's activation_function -> (feed-forward kind, activation)
ACTIVATIONS = {
    "swiglu": ("glu", "silu"),
    "geglu": ("glu", "gelu"),
    "glu": ("glu", "sigmoid"),
    "gelu": ("mlp", "gelu"),
    "gelu_new": ("mlp", "gelu_new"),
}
# Options of nomic's code that change the computation and that no released embedder turns on.
# rotary_scaling_factor is dynamic NTK, whose cos/sin depend on the padded batch's length.
REFUSED = ("prenorm", "rotary_emb_interleaved", "rotary_emb_scale_base", "rotary_scaling_factor")


def read_config(raw: Mapping[str, Any]) -> EncoderConfig:
    if "n_embd" not in raw:  # transformers' spelling
        return EncoderConfig(
            model_type="nomic_bert",
            vocab_size=raw.get("vocab_size", 30528),
            hidden_size=raw.get("hidden_size", 768),
            num_hidden_layers=raw.get("num_hidden_layers", 12),
            num_attention_heads=raw.get("num_attention_heads", 12),
            intermediate_size=raw.get("intermediate_size", 3072),
            hidden_act=raw.get("hidden_act", "silu"),
            max_position_embeddings=raw.get("max_position_embeddings", 2048),
            type_vocab_size=raw.get("type_vocab_size", 2),
            layer_norm_eps=raw.get("layer_norm_eps", 1e-12),
            pad_token_id=raw.get("pad_token_id", 0) or 0,
            positions="rotary",
            rope_theta=rope_theta(raw, None, "rope_theta", 1000.0),
            feed_forward="glu",
            attention_bias=False,
            mlp_up_bias=False,
            mlp_down_bias=False,
        )
    for key in REFUSED:
        if raw.get(key):
            raise ValueError(f"nomic_bert {key}={raw[key]!r} is not supported; allowed: unset")
    if raw.get("rotary_emb_fraction", 0.0) <= 0:
        raise ValueError("nomic_bert without rotary embeddings is not supported")
    activation = raw.get("activation_function", "swiglu")
    if activation not in ACTIVATIONS:
        allowed = ", ".join(ACTIVATIONS)
        raise ValueError(f"activation_function {activation!r} is not supported; allowed: {allowed}")
    feed_forward, act = ACTIVATIONS[activation]
    hidden = raw["n_embd"]
    inner = raw.get("n_inner") or (int(8 * hidden / 3) if feed_forward == "glu" else 4 * hidden)
    if feed_forward == "glu":
        inner = (inner + 255) // 256 * 256  # nomic's gated MLP rounds up to a multiple of 256
    return EncoderConfig(
        model_type="nomic_bert",
        vocab_size=raw["vocab_size"],
        hidden_size=hidden,
        num_hidden_layers=raw["n_layer"],
        num_attention_heads=raw["n_head"],
        intermediate_size=inner,
        hidden_act=act,
        max_position_embeddings=raw.get("n_positions", 2048),
        type_vocab_size=raw.get("type_vocab_size", 2),
        layer_norm_eps=raw.get("layer_norm_epsilon", 1e-5),
        pad_token_id=raw.get("pad_token_id") or 0,
        positions="rotary",
        rope_theta=float(raw.get("rotary_emb_base", 10_000)),
        rotary_fraction=raw["rotary_emb_fraction"],
        feed_forward=feed_forward,
        attention_bias=raw.get("qkv_proj_bias", True),
        mlp_up_bias=raw.get("mlp_fc1_bias", True),
        mlp_down_bias=raw.get("mlp_fc2_bias", True),
        trained_length=raw.get("max_trained_positions", 2048),
    )


def weight_names(config: EncoderConfig) -> WeightNames:
    layer = "encoder.layers.{}"
    # Gated: fc11 is the value, fc12 the gate (the activated second half of the fused matrix).
    up = (
        (f"{layer}.mlp.fc11", f"{layer}.mlp.fc12")
        if config.feed_forward == "glu"
        else (f"{layer}.mlp.fc1",)
    )
    names: WeightNames = {
        **linear("embeddings.tokens", "embeddings.word_embeddings", bias=False),
        **norm("embeddings.norm", "emb_ln"),
        **per_layer(
            config,
            {
                **linear("layers.{}.attention.qkv", f"{layer}.attn.Wqkv", config.attention_bias),
                **linear(
                    "layers.{}.attention.output", f"{layer}.attn.out_proj", config.attention_bias
                ),
                **norm("layers.{}.attention_norm", f"{layer}.norm1"),
                **linear("layers.{}.ffn.up", up, config.mlp_up_bias),
                **linear("layers.{}.ffn.down", f"{layer}.mlp.fc2", config.mlp_down_bias),
                **norm("layers.{}.ffn_norm", f"{layer}.norm2"),
            },
        ),
    }
    if config.type_vocab_size:
        names.update(linear("embeddings.token_types", "embeddings.token_type_embeddings", False))
    return names


NOMIC_BERT = Architecture(
    name="nomic_bert",
    read_config=read_config,
    weight_names=weight_names,
    prefixes=("bert.", "nomic_bert."),
    unused=("pooler.", "cls.", "lm_head.", "embeddings.position_ids", "embeddings.token_type_ids"),
    tied={"embeddings.word_embeddings.weight": ("cls.predictions.decoder.weight",)},
)
