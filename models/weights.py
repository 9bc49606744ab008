"""Load a Hugging Face checkpoint into `Transformer` through one explicit name map, strictly."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from models.modules import Transformer

# Hugging Face name (with any "bert."/"roberta." prefix removed) -> local name; {} is a layer index.
WEIGHT_MAP: dict[str, str] = {
    "embeddings.word_embeddings.weight": "embeddings.tokens.weight",
    "embeddings.position_embeddings.weight": "embeddings.positions.weight",
    "embeddings.token_type_embeddings.weight": "embeddings.token_types.weight",
    "embeddings.LayerNorm.weight": "embeddings.norm.weight",
    "embeddings.LayerNorm.bias": "embeddings.norm.bias",
    "encoder.layer.{}.attention.self.query.weight": "layers.{}.attention.query.weight",
    "encoder.layer.{}.attention.self.query.bias": "layers.{}.attention.query.bias",
    "encoder.layer.{}.attention.self.key.weight": "layers.{}.attention.key.weight",
    "encoder.layer.{}.attention.self.key.bias": "layers.{}.attention.key.bias",
    "encoder.layer.{}.attention.self.value.weight": "layers.{}.attention.value.weight",
    "encoder.layer.{}.attention.self.value.bias": "layers.{}.attention.value.bias",
    "encoder.layer.{}.attention.output.dense.weight": "layers.{}.attention.output.weight",
    "encoder.layer.{}.attention.output.dense.bias": "layers.{}.attention.output.bias",
    "encoder.layer.{}.attention.output.LayerNorm.weight": "layers.{}.attention_norm.weight",
    "encoder.layer.{}.attention.output.LayerNorm.bias": "layers.{}.attention_norm.bias",
    "encoder.layer.{}.intermediate.dense.weight": "layers.{}.ffn_up.weight",
    "encoder.layer.{}.intermediate.dense.bias": "layers.{}.ffn_up.bias",
    "encoder.layer.{}.output.dense.weight": "layers.{}.ffn_down.weight",
    "encoder.layer.{}.output.dense.bias": "layers.{}.ffn_down.bias",
    "encoder.layer.{}.output.LayerNorm.weight": "layers.{}.ffn_norm.weight",
    "encoder.layer.{}.output.LayerNorm.bias": "layers.{}.ffn_norm.bias",
}
# What a task model wraps the encoder in (BertModel saves bare names, BertFor* adds "bert.").
PREFIXES = ("bert.", "roberta.")
# TensorFlow-era BERT checkpoints name LayerNorm parameters gamma and beta.
LEGACY_NAMES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}
# In checkpoints but not part of the encoder: index buffers, the NSP pooler, pretraining heads.
UNUSED = ("embeddings.position_ids", "embeddings.token_type_ids", "pooler.", "cls.", "lm_head.")
# Checkpoint files, in order of preference.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class CheckpointError(ValueError):
    """A checkpoint that does not match its config: missing, unexpected or mis-shaped tensors."""


def expand_map(num_layers: int) -> dict[str, str]:
    """WEIGHT_MAP with every {} replaced by each layer index 0..num_layers-1."""
    expanded = {}
    for hf_name, local_name in WEIGHT_MAP.items():
        indices = range(num_layers) if "{}" in hf_name else [None]
        for index in indices:
            expanded[hf_name.format(index)] = local_name.format(index)
    return expanded


def find_weights(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder} has no weights; looked for {', '.join(WEIGHT_FILES)}")


def read_tensors(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        return load_file(file, device="cpu")
    return torch.load(file, map_location="cpu", weights_only=True)


def canonical_name(name: str) -> str:
    """A checkpoint's tensor name without its task-model prefix, in current LayerNorm naming."""
    for legacy, current in LEGACY_NAMES.items():
        name = name.replace(legacy, current)
    for prefix in PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def to_local(
    tensors: dict[str, torch.Tensor], expected: dict[str, torch.Size], num_layers: int, file: Path
) -> dict[str, torch.Tensor]:
    """Rename a checkpoint's tensors to local names; raise CheckpointError naming every mismatch.

    expected: local name -> shape, from the model built for the config.
    """
    name_map = expand_map(num_layers)
    problems, state, seen = [], {}, set()
    for file_name, tensor in tensors.items():
        name = canonical_name(file_name)
        if name.startswith(UNUSED):
            continue
        if name not in name_map:
            problems.append(f"unexpected tensor {file_name!r}")
            continue
        local_name = name_map[name]
        seen.add(name)
        if tensor.shape != expected[local_name]:
            problems.append(
                f"tensor {file_name!r} has shape {tuple(tensor.shape)}, "
                f"expected {tuple(expected[local_name])}"
            )
        state[local_name] = tensor
    prefix = next((p for p in PREFIXES if any(n.startswith(p) for n in tensors)), "")
    problems += [f"missing tensor {prefix + name!r}" for name in name_map if name not in seen]
    if problems:
        shown = "; ".join(problems[:8])
        more = f"; and {len(problems) - 8} more" if len(problems) > 8 else ""
        raise CheckpointError(f"{file} does not match config.json: {shown}{more}")
    return state


def load_weights(model: Transformer, folder: Path, dtype: torch.dtype) -> None:
    """Fill `model` (built on the meta device) from the folder's checkpoint, cast to dtype."""
    file = find_weights(folder)
    expected = {name: tensor.shape for name, tensor in model.state_dict().items()}
    state = to_local(read_tensors(file), expected, model.config.num_hidden_layers, file)
    state = {name: tensor.to(dtype) for name, tensor in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
