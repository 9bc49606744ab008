"""`AttentionSpec`: which attention pattern to run, validated against the mode table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class AttentionSpec:
    """An immutable, validated attention pattern: a mode name plus that mode's integer parameters.

    >>> AttentionSpec("sliding_window", window=512).window
    512

    Raises ValueError naming the field and what is allowed for an unknown mode, a missing or
    invalid parameter, or a parameter the mode does not take.
    """

    __slots__ = ("mode", "params")

    mode: str
    params: Mapping[str, int]

    def __init__(self, mode: str, **params: Any) -> None:
        from sparse_core.registry import MODES

        if mode not in MODES:
            raise ValueError(f"unknown attention mode {mode!r}; allowed: {', '.join(MODES)}")
        declared = MODES[mode].params
        names = {p.name for p in declared}
        given = {k: v for k, v in params.items() if v is not None}
        extra = sorted(set(given) - names)
        if extra:
            takes = ", ".join(sorted(names)) or "no parameters"
            raise ValueError(f"mode {mode!r} does not take {', '.join(extra)}; it takes {takes}")
        checked = {p.name: p.check(mode, given.get(p.name)) for p in declared}
        object.__setattr__(self, "mode", mode)
        object.__setattr__(self, "params", dict(checked))

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> AttentionSpec:
        """Build from `{"mode": ..., **params}` (the HTTP and settings form)."""
        fields = dict(fields)
        if "mode" not in fields:
            raise ValueError("attention needs 'mode'")
        return cls(fields.pop("mode"), **fields)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, **self.params}

    def __getattr__(self, name: str) -> int:
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


def _rebuild(mode: str, params: dict[str, int]) -> AttentionSpec:
    return AttentionSpec(mode, **params)
