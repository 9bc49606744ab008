"""What a sparsity mode is: a name, its integer parameters, its kernel and its reference mask.

Every mode lives in its own module, which builds one `Mode` and is listed once in
`sparse_core.registry.MODES`. Nothing else needs to change to add a mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from sparse_core.spec import AttentionSpec

# kernel(q, k, v, spec, lengths) -> out; q, k, v, out: (B, H, n, D); lengths: (B,) int or None
Kernel = Callable[
    ["torch.Tensor", "torch.Tensor", "torch.Tensor", "AttentionSpec", "torch.Tensor | None"],
    "torch.Tensor",
]
# reference_mask(spec, scores, key_valid) -> allowed
#   scores: (B, H, n, n) float64; key_valid: (B, 1, 1, n) bool;
#   allowed: bool, broadcastable to scores.
#   `allowed` need not exclude padded keys: the oracle does that itself.
ReferenceMask = Callable[["AttentionSpec", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]


@dataclass(frozen=True)
class Param:
    """An integer parameter of a mode, e.g. `window`. All parameters of a mode are required."""

    name: str
    minimum: int = 1
    even: bool = False
    help: str = ""

    def check(self, mode: str, value: object) -> int:
        """Return `value` as an int, or raise ValueError saying what is allowed."""
        allowed = f"an integer >= {self.minimum}" + (" and even" if self.even else "")
        if value is None:
            raise ValueError(f"mode {mode!r} needs {self.name!r}: {allowed}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{self.name!r} must be {allowed}, got {value!r}")
        if value < self.minimum or (self.even and value % 2):
            raise ValueError(f"{self.name!r} must be {allowed}, got {value}")
        return value


@dataclass(frozen=True)
class Mode:
    """One row of the mode table."""

    name: str
    params: tuple[Param, ...]
    kernel: Kernel
    reference_mask: ReferenceMask
    description: str = ""
    # True when the kernel scores every query–key pair (O(n²) time), whatever its parameters;
    # the service bounds such modes' input length (max_dense_tokens).
    pairwise: bool = False
