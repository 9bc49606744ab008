"""What an architecture module declares: how to read its config.json and name its weights."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from models.config import EncoderConfig

# local name -> the checkpoint names it is made of: one name, or several whose tensors are
# concatenated along dim 0 (q, k, v into one fused projection; GLU halves into one up matrix).
WeightNames = dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class Architecture:
    """One family of checkpoints: its config reader and its explicit, strict weight map."""

    name: str
    read_config: Callable[[Mapping[str, Any]], EncoderConfig]
    weight_names: Callable[[EncoderConfig], WeightNames]
    # What a task model wraps the encoder in ("bert." in BertForMaskedLM, "model." in
    # ModernBertForMaskedLM); stripped before the map is read.
    prefixes: tuple[str, ...] = ()
    # Checkpoint names (after the prefix) that are not part of the encoder: heads, poolers,
    # index buffers. A name starting with one of these is skipped.
    unused: tuple[str, ...] = ()
    # Name parts that mark a tensor as not the encoder's wherever they occur (LoRA adapters).
    unused_parts: tuple[str, ...] = ()
    # Older spellings of a name part -> the current one (TensorFlow-era gamma/beta).
    renames: Mapping[str, str] = field(default_factory=dict)
    # Tied weights: a name the encoder needs -> where a checkpoint may store it instead.
    tied: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def per_layer(config: EncoderConfig, template: WeightNames) -> WeightNames:
    """template with every {} replaced by each layer index 0..num_hidden_layers-1."""
    expanded: WeightNames = {}
    for layer in range(config.num_hidden_layers):
        for local, sources in template.items():
            expanded[local.format(layer)] = tuple(name.format(layer) for name in sources)
    return expanded


def linear(local: str, source: str | tuple[str, ...], bias: bool) -> WeightNames:
    """A Linear's weight (and bias, if it has one) from one or several checkpoint Linears."""
    sources = (source,) if isinstance(source, str) else source
    names = {f"{local}.weight": tuple(f"{name}.weight" for name in sources)}
    if bias:
        names[f"{local}.bias"] = tuple(f"{name}.bias" for name in sources)
    return names


def norm(local: str, source: str, bias: bool = True) -> WeightNames:
    """A LayerNorm's weight (and bias, if it has one)."""
    return linear(local, source, bias)
