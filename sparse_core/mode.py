"""What a sparsity mode is: a name, its parameters, its kernel, its cost and its reference.

Every mode lives in its own module, which builds one `Mode` and is listed once in
`sparse_core.registry.MODES`. Request validation, the JSON schema, `/info` and warm-up read the
table; nothing else needs to change to add a mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from sparse_core.pattern import Pattern
    from sparse_core.spec import AttentionSpec

# Upper bounds of DESIGN §2: positions and sizes, random features and landmarks, random blocks,
# dilation, seeds. Every parameter has one, so that an absurd value is a clear ValueError.
MAX_POSITIONS = 1 << 20
MAX_FEATURES = 4096
MAX_RANDOM_BLOCKS = 64
MAX_DILATION = 1024
MAX_SEED = (1 << 31) - 1

# kernel(q, k, v, spec, lengths) -> out; q, k, v, out: (B, H, n, D); lengths: (B,) int or None
Kernel = Callable[
    ["torch.Tensor", "torch.Tensor", "torch.Tensor", "AttentionSpec", "torch.Tensor | None"],
    "torch.Tensor",
]
# pattern(spec, lengths, q, k) -> the mask pattern of a batch; lengths: (B,) int64 on q's device.
# q and k are read only by content-based patterns (routing).
PatternFactory = Callable[
    ["AttentionSpec", "torch.Tensor", "torch.Tensor", "torch.Tensor"], "Pattern"
]
# reference(spec, q, k, v) -> out, the mode's own formula on one unpadded sequence in float64;
# q, k, v, out: (H, L, D). For modes that are not a fixed mask (topk, threshold, performer,
# nystrom); mask modes are checked against their pattern's predicate instead.
Reference = Callable[
    ["AttentionSpec", "torch.Tensor", "torch.Tensor", "torch.Tensor"], "torch.Tensor"
]
# cost(spec, length) -> (query, key) pairs the kernel scores for one sequence of `length` tokens.
Cost = Callable[["AttentionSpec", int], int]
# check(params) -> None or raise ValueError: rules between parameters (fixed: summary <= block)
CrossCheck = Callable[[Mapping[str, Any]], None]

# The warm-up example when a parameter declares none: a size that makes a ~1k-token input take
# the sparse path (a window of 64 is much narrower than the input).
EXAMPLE_SIZE = 64


@dataclass(frozen=True)
class Param:
    """One parameter of a mode, e.g. `window`.

    kind: int or float. minimum, maximum: inclusive bounds, except that `exclusive_minimum`
    makes the lower bound strict (threshold: 0 < τ <= 1). default: None for a required
    parameter, else the value an omitted one takes. even / odd: parity rules for integers.
    example: a valid value for warm-up that exercises the sparse path at about 1k tokens;
    left None, it is the default, else 64 brought into range.
    """

    name: str
    kind: type = int
    minimum: int | float = 1
    maximum: int | float = MAX_POSITIONS
    default: int | float | None = None
    even: bool = False
    odd: bool = False
    exclusive_minimum: bool = False
    help: str = ""
    example: int | float | None = field(default=None)

    def __post_init__(self) -> None:
        if self.kind not in (int, float):
            raise TypeError(f"Param kind must be int or float, got {self.kind!r}")
        if self.example is None:
            object.__setattr__(self, "example", self._default_example())
        self.check("(declaration)", self.example)  # the table itself must be consistent
        if self.default is not None:
            self.check("(declaration)", self.default)

    @property
    def required(self) -> bool:
        return self.default is None

    def allowed(self) -> str:
        """What the parameter accepts, in words: 'an integer, 2 <= value <= 1048576, even'."""
        noun = "an integer" if self.kind is int else "a number"
        low = "<" if self.exclusive_minimum else "<="
        rule = f"{noun}, {self.minimum} {low} value <= {self.maximum}"
        if self.even:
            rule += ", even"
        if self.odd:
            rule += ", odd"
        return rule

    def check(self, mode: str, value: object) -> int | float:
        """`value` checked and converted (int, or float for float params); None -> the default.

        Raises ValueError naming the field and what is allowed, for a missing required value, a
        wrong type (bool is not a number; lists, dicts and other unhashables are refused), NaN or
        infinity, a value out of either bound, or the wrong parity.
        """
        if value is None:
            if self.default is None:
                raise ValueError(f"mode {mode!r} needs {self.name!r}: {self.allowed()}")
            return self.default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{self.name!r} must be {self.allowed()}; got {_short(value)}")
        if self.kind is int and not isinstance(value, int):
            raise ValueError(f"{self.name!r} must be {self.allowed()}; got {_short(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{self.name!r} must be {self.allowed()}; got {value}")
        # bounds first, on the value as given: float() of a huge int would overflow
        below = value <= self.minimum if self.exclusive_minimum else value < self.minimum
        if below or value > self.maximum:
            raise ValueError(f"{self.name!r} must be {self.allowed()}; got {_short(value)}")
        value = self.kind(value)
        if (self.even and value % 2) or (self.odd and not value % 2):
            raise ValueError(f"{self.name!r} must be {self.allowed()}; got {value}")
        return value

    def json_schema(self) -> dict[str, Any]:
        """A JSON-schema fragment: type, bounds, parity, default (optional params), description.

        A strict lower bound is `exclusiveMinimum` (draft 2020-12 / OpenAPI 3.1 form: a number).
        """
        schema: dict[str, Any] = {"type": "integer" if self.kind is int else "number"}
        if self.exclusive_minimum:
            schema["exclusiveMinimum"] = self.minimum
        else:
            schema["minimum"] = self.minimum
        schema["maximum"] = self.maximum
        if self.even:
            schema["multipleOf"] = 2
        if self.odd:
            schema["not"] = {"multipleOf": 2}
        if self.default is not None:
            schema["default"] = self.default
        schema["description"] = self.help
        return schema

    def _default_example(self) -> int | float:
        if self.default is not None:
            return self.default
        if self.kind is float:
            return self.maximum
        value = min(max(self.minimum, EXAMPLE_SIZE), self.maximum)
        if (self.even and value % 2) or (self.odd and not value % 2):
            value = value + 1 if value < self.maximum else value - 1
        return value


def _short(value: object) -> str:
    """A value's repr for an error message, cut short: a client may send a huge list."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Mode:
    """One row of the mode table.

    pattern: for mask modes, builds the batch's pattern (predicate and key-block lists); the
    oracle derives its mask from it. reference: for the other modes, their own float64 formula.
    pairwise: True when the kernel scores every query–key pair (O(n²) time), whatever the
    parameters. cost: token pairs one sequence costs, see `AttentionSpec.cost`.
    """

    name: str
    params: tuple[Param, ...]
    kernel: Kernel
    cost: Cost
    description: str = ""
    pairwise: bool = False
    pattern: PatternFactory | None = None
    reference: Reference | None = None
    cross_check: CrossCheck | None = None

    def __post_init__(self) -> None:
        if (self.pattern is None) == (self.reference is None):
            raise TypeError(f"mode {self.name!r} needs exactly one of pattern and reference")


def quadratic_cost(spec: AttentionSpec, length: int) -> int:
    """Every valid query scores every valid key: length²."""
    return length * length
