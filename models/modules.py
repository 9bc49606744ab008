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


class TokenRows:
    """Where each real token's row sits in the padded (B, n) grid the attention kernels take.

    Projections, the FFN and LayerNorms act on each token alone, so the layers keep hidden states
    as packed rows, (T, hidden) for the T real tokens, and never spend work on padding (a quarter
    of the rows in a typical batch of short texts). Only attention sees the padded grid.
    """

    def __init__(self, batch: int, n: int, lengths: torch.Tensor | None) -> None:
        self.batch, self.n = batch, n
        self.lengths = lengths  # (B,) real tokens per row; None when no row is padded
        self.index: torch.Tensor | None = None  # (T,) flat grid positions of real tokens
        if lengths is not None:
            positions = torch.arange(n, device=lengths.device)
            real = positions[None, :] < lengths[:, None]  # (B, n)
            self.index = real.flatten().nonzero().squeeze(1)

    def pack(self, grid: torch.Tensor) -> torch.Tensor:
        """(B, n, ...) -> (T, ...): the real tokens' rows, input by input."""
        flat = grid.reshape(self.batch * self.n, *grid.shape[2:])  # (B·n, ...)
        return flat if self.index is None else flat.index_select(0, self.index)

    def unpack(self, rows: torch.Tensor) -> torch.Tensor:
        """(T, ...) -> (B, n, ...), with zeros at padded positions."""
        if self.index is not None:
            grid = rows.new_zeros(self.batch * self.n, *rows.shape[1:])  # (B·n, ...)
            rows = grid.index_copy_(0, self.index, rows)
        return rows.view(self.batch, self.n, *rows.shape[1:])


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
        self,
        hidden: torch.Tensor,
        spec: AttentionSpec,
        rows: TokenRows,
    ) -> torch.Tensor:
        """hidden: (T, hidden) packed rows -> (T, hidden)."""

        def heads(projected: torch.Tensor) -> torch.Tensor:
            grid = rows.unpack(projected.view(-1, self.heads, self.head_dim))  # (B, n, H, D)
            return grid.transpose(1, 2)  # (B, H, n, D)

        q, k, v = heads(self.query(hidden)), heads(self.key(hidden)), heads(self.value(hidden))
        out = attend(q, k, v, spec, rows.lengths)  # (B, H, n, D)
        # Padded query rows may hold anything, NaN included; pack drops them.
        out = rows.pack(out.transpose(1, 2))  # (T, H, D)
        return self.output(out.flatten(1))  # (T, hidden)


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
        rows: TokenRows,
    ) -> torch.Tensor:
        """hidden: (T, hidden) packed rows -> (T, hidden)."""
        hidden = self.attention_norm(hidden + self.attention(hidden, spec, rows))
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

        Returns (B, n, hidden), zero at padded positions.
        """
        batch, n = ids.shape
        rows = TokenRows(batch, n, lengths)
        hidden = rows.pack(self.embeddings(ids, lengths))  # (T, hidden)
        for layer in self.layers:
            hidden = layer(hidden, spec, rows)
        return rows.unpack(hidden)  # (B, n, hidden)
