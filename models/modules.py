"""The encoder network, wired from an EncoderConfig: embeddings, layers, optional final norm.

Attention is delegated to `sparse_core.attend`, with one spec per layer (models.patterns).
Hidden states travel as packed token rows (models.rows.TokenRows).
"""

from __future__ import annotations

import torch
from torch import nn

from models.attention import SelfAttention
from models.config import EncoderConfig
from models.feed_forward import FEED_FORWARDS
from models.patterns import layer_specs, native_patterns
from models.positions import POSITION_EXTENSIONS
from models.rotary import Rotary
from models.rows import TokenRows
from sparse_core import AttentionSpec, reuse_block_masks

__all__ = ["Embeddings", "EncoderLayer", "TokenRows", "Transformer"]


def layer_norm(config: EncoderConfig) -> nn.LayerNorm:
    return nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, bias=config.norm_bias)


class Embeddings(nn.Module):
    """Token (+ learned position) (+ token type 0) embeddings, then a LayerNorm."""

    def __init__(self, config: EncoderConfig, position_extension: str) -> None:
        super().__init__()
        if position_extension not in POSITION_EXTENSIONS:
            raise ValueError(
                f"unknown position_extension {position_extension!r}; "
                f"allowed: {', '.join(POSITION_EXTENSIONS)}"
            )
        self.tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.positions = (
            POSITION_EXTENSIONS[position_extension](config)
            if config.positions == "learned"
            else None  # rotary models rotate q and k instead
        )
        self.token_types = (
            nn.Embedding(config.type_vocab_size, config.hidden_size)
            if config.type_vocab_size
            else None
        )
        self.norm = layer_norm(config)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """ids: (B, n) -> (B, n, hidden). Every token is segment 0 (one text per input)."""
        hidden = self.tokens(ids)  # (B, n, hidden)
        if self.token_types is not None:
            hidden = hidden + self.token_types.weight[0]
        if self.positions is not None:
            hidden = hidden + self.positions(ids.shape[1], lengths)
        return self.norm(hidden)


class EncoderLayer(nn.Module):
    """Attention and feed-forward, each with a residual and a LayerNorm placed after (BERT,
    "post") or before (ModernBERT, "pre") it."""

    def __init__(self, config: EncoderConfig, index: int) -> None:
        super().__init__()
        self.pre_norm = config.norm_placement == "pre"
        self.attention = SelfAttention(config)
        has_norm = not self.pre_norm or index > 0 or config.first_attention_norm
        self.attention_norm = layer_norm(config) if has_norm else nn.Identity()
        self.ffn = FEED_FORWARDS[config.feed_forward](config)
        self.ffn_norm = layer_norm(config)

    def forward(
        self,
        hidden: torch.Tensor,
        spec: AttentionSpec,
        rows: TokenRows,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """hidden: (T, hidden) packed rows -> (T, hidden)."""
        if self.pre_norm:
            hidden = hidden + self.attention(self.attention_norm(hidden), spec, rows, rotary)
            return hidden + self.ffn(self.ffn_norm(hidden))
        hidden = self.attention_norm(hidden + self.attention(hidden, spec, rows, rotary))
        return self.ffn_norm(hidden + self.ffn(hidden))


class Transformer(nn.Module):
    """Token ids -> final hidden states: embeddings and layers, nothing else (no pooler)."""

    def __init__(self, config: EncoderConfig, position_extension: str = "copy") -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config, position_extension)
        self.layers = nn.ModuleList(
            EncoderLayer(config, index) for index in range(config.num_hidden_layers)
        )
        self.final_norm = layer_norm(config) if config.final_norm else None
        self.native = native_patterns(config.local_layers, config.local_window)
        # One cos/sin table per distinct rotary base; each layer names the one it reads.
        self.rotaries = nn.ModuleList()
        self.rotary_of_layer: list[int | None] = [None] * config.num_hidden_layers
        if config.positions == "rotary":
            local_theta = config.local_rope_theta or config.rope_theta
            thetas = [local_theta if local else config.rope_theta for local in config.local_layers]
            distinct = sorted(set(thetas))
            for theta in distinct:
                self.rotaries.append(Rotary(theta, config.rotary_dim, config.rope_ntk_factor))
            self.rotary_of_layer = [distinct.index(theta) for theta in thetas]

    def reset_buffers(self) -> None:
        """Compute the non-checkpoint buffers (rotary speeds) once the model is materialized."""
        for rotary in self.rotaries:
            rotary.reset()

    def layer_specs(self, spec: AttentionSpec) -> list[AttentionSpec]:
        """The spec each layer runs for a requested spec (see models.patterns)."""
        return layer_specs(self.native, spec)

    def forward(
        self, ids: torch.Tensor, spec: AttentionSpec, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """ids: (B, n) int; spec: the requested pattern; lengths: (B,) valid tokens per row,
        None when no row is padded.

        Returns (B, n, hidden), zero at padded positions.
        """
        batch, n = ids.shape
        rows = TokenRows(batch, n, lengths)
        hidden = rows.pack(self.embeddings(ids, lengths))  # (T, hidden)
        tables: list[tuple[torch.Tensor, torch.Tensor]] = []
        if len(self.rotaries):
            positions = rows.positions(ids.device)  # (T,)
            tables = [rotary(positions) for rotary in self.rotaries]
        # the layers run each spec over the same rows: one FlexAttention block mask per spec
        with reuse_block_masks():
            for layer, layer_spec, table in zip(
                self.layers, self.layer_specs(spec), self.rotary_of_layer, strict=True
            ):
                rotary = None if table is None else tables[table]
                hidden = layer(hidden, layer_spec, rows, rotary)
        if self.final_norm is not None:
            hidden = self.final_norm(hidden)
        return rows.unpack(hidden)  # (B, n, hidden)
