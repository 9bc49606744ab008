"""`AttentionSpec`: which attention pattern to run, validated against the mode table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class AttentionSpec:
    """An immutable, validated attention pattern: a mode name plus all of that mode's
    parameters, optional ones resolved to their defaults.

    >>> AttentionSpec("sliding_window", window=512).window
    512
    >>> AttentionSpec("global_window", window=512).to_dict()
    {'mode': 'global_window', 'window': 512, 'global_tokens': 1}

    Raises ValueError (never TypeError) naming the field and what is allowed for a mode that is
    not a known name (including unhashable or non-string values), a missing, wrong-typed,
    unhashable or out-of-range parameter, or a parameter the mode does not take.
    """

    __slots__ = ("mode", "params")

    mode: str
    params: Mapping[str, int | float]

    def __init__(self, mode: str, **params: Any) -> None:
        from sparse_core.registry import MODES

        if not isinstance(mode, str) or mode not in MODES:
            shown = repr(mode)[:60] if isinstance(mode, str) else f"of type {type(mode).__name__}"
            raise ValueError(f"unknown attention mode {shown}; allowed: {', '.join(MODES)}")
        table = MODES[mode]
        names = [p.name for p in table.params]
        given = {key: value for key, value in params.items() if value is not None}
        extra = sorted(set(given) - set(names))
        if extra:
            takes = ", ".join(names) or "no parameters"
            raise ValueError(f"mode {mode!r} does not take {', '.join(extra)}; it takes {takes}")
        checked = {p.name: p.check(mode, given.get(p.name)) for p in table.params}
        if table.cross_check is not None:
            table.cross_check(checked)
        object.__setattr__(self, "mode", mode)
        object.__setattr__(self, "params", checked)

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> AttentionSpec:
        """Build from `{"mode": ..., **params}` (the HTTP and settings form)."""
        if not isinstance(fields, Mapping):
            raise ValueError(f"attention must be an object with a 'mode', got {type(fields)}")
        fields = dict(fields)
        if "mode" not in fields:
            raise ValueError("attention needs 'mode'")
        if not all(isinstance(key, str) for key in fields):
            raise ValueError("attention parameter names must be strings")
        return cls(fields.pop("mode"), **fields)

    def to_dict(self) -> dict[str, Any]:
        """`{"mode": ..., **params}` with every parameter, defaults included (the resolved spec)."""
        return {"mode": self.mode, **self.params}

    def cost(self, length: int) -> int:
        """(query, key) pairs one sequence of `length` valid tokens costs under this spec.

        By the mode's cost class: the pairs the kernel computes for block-listed modes (those of
        its listed blocks), length² for dense, topk and threshold, length·m for performer and
        nystrom (m = features or landmarks; nystrom with m >= length is dense). The service
        bounds a request's total cost with it.
        """
        from sparse_core.registry import MODES

        if length <= 0:
            return 0
        return MODES[self.mode].cost(self, length)

    def __getattr__(self, name: str) -> int | float:
        # Only reached for names that are not slots: the mode's parameters.
        try:
            return object.__getattribute__(self, "params")[name]
        except KeyError:
            raise AttributeError(f"mode {self.mode!r} has no parameter {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("AttentionSpec is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AttentionSpec):
            return NotImplemented
        return self.mode == other.mode and self.params == other.params

    def __hash__(self) -> int:
        return hash((self.mode, tuple(sorted(self.params.items()))))

    def __repr__(self) -> str:
        args = "".join(f", {k}={v}" for k, v in self.params.items())
        return f"AttentionSpec({self.mode!r}{args})"

    def __reduce__(self):  # picklable despite __slots__ and the custom __init__
        return (_rebuild, (self.mode, dict(self.params)))


def _rebuild(mode: str, params: dict[str, int | float]) -> AttentionSpec:
    return AttentionSpec(mode, **params)
