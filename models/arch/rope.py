"""A config.json's rotary settings, in older flat keys or transformers' `rope_parameters`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def rope_theta(raw: Mapping[str, Any], kind: str | None, flat_key: str, default: float) -> float:
    """The rotary base of one layer kind ("full_attention", "sliding_attention", or None for a
    model with one kind), from `rope_parameters` or the older flat key; only plain RoPE runs."""
    parameters = raw.get("rope_parameters") or {}
    if kind is not None:
        parameters = parameters.get(kind) or {}
    rope_type = parameters.get("rope_type", parameters.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"rope_type {rope_type!r} is not supported; allowed: 'default'")
    theta = parameters.get("rope_theta", raw.get(flat_key))
    return float(default if theta is None else theta)
