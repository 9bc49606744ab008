"""Feed-forward blocks: BERT's MLP and the gated GLU family (GeGLU, SwiGLU)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from models.config import EncoderConfig

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": partial(F.gelu, approximate="tanh"),
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "sigmoid": torch.sigmoid,
}


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"hidden_act {name!r} is not supported; allowed: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class MLP(nn.Module):
    """down(act(up(x))): (T, hidden) -> (T, hidden)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        hidden, inner = config.hidden_size, config.intermediate_size
        self.up = nn.Linear(hidden, inner, bias=config.mlp_up_bias)
        self.down = nn.Linear(inner, hidden, bias=config.mlp_down_bias)
        self.activation = activation(config.hidden_act)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.down(self.activation(self.up(hidden)))


class GLU(nn.Module):
    """down(act(a) * b), with a and b the two halves of one fused up projection.

    Which half is activated is the checkpoint family's convention (config.glu_activated):
    ModernBERT activates the first, GTE and NomicBert the second. GeGLU with gelu, SwiGLU with
    silu.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        hidden, inner = config.hidden_size, config.intermediate_size
        self.up = nn.Linear(hidden, 2 * inner, bias=config.mlp_up_bias)
        self.down = nn.Linear(inner, hidden, bias=config.mlp_down_bias)
        self.activation = activation(config.hidden_act)
        self.activated = config.glu_activated

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        halves = self.up(hidden).chunk(2, dim=-1)  # 2 × (T, inner)
        gate, value = halves[self.activated], halves[1 - self.activated]
        return self.down(self.activation(gate) * value)


FEED_FORWARDS: dict[str, type[nn.Module]] = {"mlp": MLP, "glu": GLU}
