"""A BERT-family encoder (post-LayerNorm) whose attention is delegated to `sparse_core.attend`."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from models.config import EncoderConfig
from models.positions import POSITION_EXTENSIONS
from sparse_core import AttentionSpec, attend

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": partial(F.gelu, approximate="tanh"),
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


class Embeddings(nn.Module):
    def __init__(self, config: EncoderConfig, position_extension: str) -> None:
        super().__init__()
        if position_extension not in POSITION_EXTENSIONS:
            raise ValueError(
                f"unknown position_extension {position_extension!r}; "
                f"allowed: {', '.join(POSITION_EXTENSIONS)}"
            )
        self.tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.positions = POSITION_EXTENSIONS[position_extension](config)
        self.token_types = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """ids: (B, n) -> (B, n, hidden). Every token is segment 0 (one text per input)."""
        hidden = self.tokens(ids) + self.token_types.weight[0]  # (B, n, hidden)
        hidden = hidden + self.positions(ids.shape[1], lengths)
        return self.norm(hidden)


class SelfAttention(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.output = nn.Linear(hidden, hidden)

    def forward(
        self, hidden: torch.Tensor, spec: AttentionSpec, lengths: torch.Tensor | None
    ) -> torch.Tensor:
        batch, n, width = hidden.shape
        heads = (batch, n, self.heads, self.head_dim)
        q = self.query(hidden).view(heads).transpose(1, 2)  # (B, H, n, D)
        k = self.key(hidden).view(heads).transpose(1, 2)  # (B, H, n, D)
        v = self.value(hidden).view(heads).transpose(1, 2)  # (B, H, n, D)
        out = attend(q, k, v, spec, lengths)  # (B, H, n, D)
        out = out.transpose(1, 2).reshape(batch, n, width)  # (B, n, hidden)
        return self.output(out)


class EncoderLayer(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        hidden, eps = config.hidden_size, config.layer_norm_eps
        self.attention = SelfAttention(config)
        self.attention_norm = nn.LayerNorm(hidden, eps=eps)
        self.ffn_up = nn.Linear(hidden, config.intermediate_size)
        self.ffn_down = nn.Linear(config.intermediate_size, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)
        if config.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"hidden_act {config.hidden_act!r} is not supported; "
                f"allowed: {', '.join(ACTIVATIONS)}"
            )
        self.activation = ACTIVATIONS[config.hidden_act]

    def forward(
        self,
        hidden: torch.Tensor,
        spec: AttentionSpec,
        lengths: torch.Tensor | None,
        padding: torch.Tensor | None,
    ) -> torch.Tensor:
        attended = self.attention(hidden, spec, lengths)  # (B, n, hidden)
        if padding is not None:
            # Padded query rows may come back as anything, NaN included; zero them so that they
            # cannot leak into valid rows through the next layer's values (0 weight · NaN = NaN).
            attended = attended.masked_fill(padding, 0.0)
        hidden = self.attention_norm(hidden + attended)
        return self.ffn_norm(hidden + self.ffn_down(self.activation(self.ffn_up(hidden))))


class Transformer(nn.Module):
    """Token ids -> final hidden states: embeddings and layers, nothing else (no pooler)."""

    def __init__(self, config: EncoderConfig, position_extension: str = "copy") -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config, position_extension)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_hidden_layers))

    def forward(
        self, ids: torch.Tensor, spec: AttentionSpec, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """ids: (B, n) int; lengths: (B,) valid tokens per row, None when no row is padded.

        Returns (B, n, hidden); rows at padded positions are meaningless.
        """
        padding = None
        if lengths is not None:
            positions = torch.arange(ids.shape[1], device=ids.device)
            padding = (positions[None, :] >= lengths[:, None])[..., None]  # (B, n, 1)
        hidden = self.embeddings(ids, lengths)  # (B, n, hidden)
        for layer in self.layers:
            hidden = layer(hidden, spec, lengths, padding)
        return hidden
