"""Load a Hugging Face checkpoint into `Transformer` through its architecture's explicit name
map, strictly: every missing, unexpected or mis-shaped tensor is named in one error.

Formats: model.safetensors, sharded safetensors (model.safetensors.index.json), and where no
safetensors exist pytorch_model.bin (single or sharded), read with weights_only=True.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from models.arch.base import Architecture
from models.modules import Transformer

# Checkpoint files, in order of preference: an index lists the shards of a sharded checkpoint.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
SHOWN_PROBLEMS = 8


class CheckpointError(ValueError):
    """A checkpoint that does not match its config: missing, unexpected or mis-shaped tensors."""


def find_weights(folder: Path) -> Path:
    """The folder's checkpoint file (or shard index), safetensors first."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"{folder} has no weights; looked for model.safetensors, pytorch_model.bin "
        "(and their sharded .index.json forms)"
    )


def read_file(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        return load_file(file, device="cpu")
    return torch.load(file, map_location="cpu", weights_only=True)


def read_tensors(file: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint file, or of all the shards an index.json lists."""
    if file.suffix != ".json":
        return read_file(file)
    index = json.loads(file.read_text())
    shards = sorted(set(index["weight_map"].values()))
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        tensors.update(read_file(file.parent / shard))
    listed = set(index["weight_map"])
    if listed != set(tensors):
        missing = sorted(listed - set(tensors))[:SHOWN_PROBLEMS]
        raise CheckpointError(f"{file} lists tensors its shards do not hold: {missing}")
    return tensors


def canonical_name(name: str, architecture: Architecture) -> str:
    """A checkpoint's tensor name without its task-model prefix, in current naming."""
    for old, new in architecture.renames.items():
        name = name.replace(old, new)
    for prefix in architecture.prefixes:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def is_unused(name: str, architecture: Architecture) -> bool:
    return name.startswith(architecture.unused) or any(
        part in name for part in architecture.unused_parts
    )


def to_local(
    tensors: dict[str, torch.Tensor],
    architecture: Architecture,
    names: dict[str, tuple[str, ...]],
    expected: dict[str, torch.Size],
    file: Path,
) -> dict[str, torch.Tensor]:
    """Rename (and fuse) a checkpoint's tensors to local names; raise CheckpointError naming
    every mismatch.

    names: local name -> checkpoint names concatenated along dim 0 (the architecture's map).
    expected: local name -> shape, from the model built for the config.
    """
    canonical = {canonical_name(name, architecture): name for name in tensors}
    # checkpoint name -> (local name, part index, number of parts)
    wanted = {
        source: (local, part, len(sources))
        for local, sources in names.items()
        for part, source in enumerate(sources)
    }
    for name, aliases in architecture.tied.items():
        present = [alias for alias in aliases if alias in canonical]
        if name in wanted and name not in canonical and present:
            canonical[name] = canonical.pop(present[0])  # stored only under its tied name
    problems: list[str] = []
    parts: dict[str, list] = {local: [None] * len(sources) for local, sources in names.items()}
    for name, file_name in canonical.items():
        if name not in wanted:
            if not is_unused(name, architecture):
                problems.append(f"unexpected tensor {file_name!r}")
            continue
        local, part, count = wanted[name]
        tensor = tensors[file_name]
        shape = expected[local]
        part_shape = (shape[0] // count, *shape[1:])
        if tuple(tensor.shape) != part_shape:
            problems.append(
                f"tensor {file_name!r} has shape {tuple(tensor.shape)}, expected {part_shape}"
            )
        parts[local][part] = tensor
    prefix = next((p for p in architecture.prefixes if any(n.startswith(p) for n in tensors)), "")
    problems += [f"missing tensor {prefix + name!r}" for name in wanted if name not in canonical]
    if problems:
        shown = "; ".join(problems[:SHOWN_PROBLEMS])
        hidden = len(problems) - SHOWN_PROBLEMS
        more = f"; and {hidden} more" if hidden > 0 else ""
        raise CheckpointError(f"{file} does not match config.json: {shown}{more}")
    return {local: fuse(pieces) for local, pieces in parts.items()}


def fuse(pieces: list[torch.Tensor]) -> torch.Tensor:
    """One tensor as it is, several concatenated along dim 0 (a fused projection)."""
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def load_weights(
    model: Transformer, folder: Path, dtype: torch.dtype, architecture: Architecture
) -> None:
    """Fill `model` (built on the meta device) from the folder's checkpoint, cast to dtype."""
    file = find_weights(folder)
    expected = {name: tensor.shape for name, tensor in model.state_dict().items()}
    names = architecture.weight_names(model.config)
    if set(names) != set(expected):  # the map and the modules disagree: a bug, not bad input
        raise RuntimeError(
            f"{architecture.name} weight map and model disagree on "
            f"{sorted(set(names) ^ set(expected))}"
        )
    state = to_local(read_tensors(file), architecture, names, expected, file)
    state = {name: tensor.to(dtype) for name, tensor in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
