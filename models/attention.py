"""Self-attention over packed token rows: one fused QKV projection, optional RoPE, and the
pattern's kernel from `sparse_core.attend` on the padded grid."""

from __future__ import annotations

import torch
from torch import nn

from models.config import EncoderConfig
from models.rotary import rotate
from models.rows import TokenRows
from sparse_core import AttentionSpec, attend


class SelfAttention(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.heads = config.num_attention_heads
        self.head_dim = config.head_dim
        # q, k and v stacked along the output dimension, as ModernBERT and NomicBert store them
        # (BERT's three matrices are concatenated at load).
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=config.attention_bias)
        self.output = nn.Linear(hidden, hidden, bias=config.attention_bias)

    def forward(
        self,
        hidden: torch.Tensor,
        spec: AttentionSpec,
        rows: TokenRows,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """hidden: (T, hidden) packed rows; rotary: (cos, sin) of each row, (T, d) each, or None.

        Returns (T, hidden).
        """
        qkv = self.qkv(hidden).view(-1, 3, self.heads, self.head_dim)  # (T, 3, H, D)
        q, k, v = qkv.unbind(dim=1)  # (T, H, D) each
        if rotary is not None:
            q, k = rotate(q, *rotary), rotate(k, *rotary)

        def grid(projected: torch.Tensor) -> torch.Tensor:
            return rows.unpack(projected).transpose(1, 2)  # (B, n, H, D) -> (B, H, n, D)

        out = attend(grid(q), grid(k), grid(v), spec, rows.lengths)  # (B, H, n, D)
        # Padded query rows may hold anything, NaN included; pack drops them.
        out = rows.pack(out.transpose(1, 2))  # (T, H, D)
        return self.output(out.flatten(1))  # (T, hidden)
