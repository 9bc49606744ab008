"""Checkpoint formats and strictness for the rotary architectures: sharded safetensors,
pytorch_model.bin, task-model prefixes and tied heads, and errors naming every bad tensor."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from models import CheckpointError, load_encoder
from sparse_core import AttentionSpec
from tests.models.tiny_archs import KINDS, save_tiny

BATCH = [[2, *range(10, 40), 3], [2, 11, 12, 3]]
DENSE = AttentionSpec("dense")


def embed(folder: Path) -> list[torch.Tensor]:
    return load_encoder(folder, device="cpu").encode_ids(BATCH, DENSE, pooling="none")


@pytest.mark.parametrize("kind", KINDS)
def test_sharded_and_bin_checkpoints_load_like_one_file(kind: str, tmp_path: Path) -> None:
    single, sharded, pickled = tmp_path / "single", tmp_path / "sharded", tmp_path / "bin"
    save_tiny(kind, single)
    save_tiny(kind, sharded, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("model-*.safetensors"))) > 1
    save_tiny(kind, pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()

    expected = embed(single)
    for folder in (sharded, pickled):
        for mine, reference in zip(embed(folder), expected, strict=True):
            torch.testing.assert_close(mine, reference, atol=0, rtol=0)


def test_masked_lm_checkpoint_loads_the_encoder_under_its_prefix(tmp_path: Path) -> None:
    """ModernBertForMaskedLM stores the encoder under "model." beside a head and a tied
    decoder; the encoder loads, the head is left out."""
    save_tiny("modernbert-mlm", tmp_path)
    names = load_file(tmp_path / "model.safetensors")
    assert any(name.startswith("model.layers.") for name in names)
    assert any(name.startswith("head.") for name in names)
    encoder = load_encoder(tmp_path, device="cpu")
    assert encoder.native_layer_patterns[1] == {"mode": "sliding_window", "window": 8}


def edit(folder: Path, change) -> None:
    tensors = load_file(folder / "model.safetensors")
    change(tensors)
    save_file(tensors, folder / "model.safetensors")


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("modernbert", "layers.2.attn.Wqkv.weight"),
        ("nomic_bert", "encoder.layers.1.mlp.fc12.weight"),  # one half of a fused GLU
        ("gte", "encoder.layer.0.attention.qkv_proj.bias"),
        ("jina", "encoder.layers.2.mixer.out_proj.bias"),
    ],
)
def test_missing_and_misshaped_tensors_are_named(kind: str, name: str, tmp_path: Path) -> None:
    save_tiny(kind, tmp_path)
    original = load_file(tmp_path / "model.safetensors")[name]
    edit(tmp_path, lambda tensors: tensors.pop(name))
    with pytest.raises(CheckpointError, match=f"missing tensor '{name}'"):
        load_encoder(tmp_path, device="cpu")

    def shrink(tensors: dict[str, torch.Tensor]) -> None:
        tensors[name] = original[:-1].contiguous()

    edit(tmp_path, shrink)
    expected = tuple(original.shape)
    shape = f"has shape \\({original.shape[0] - 1},"
    with pytest.raises(CheckpointError, match=f"'{name}' {shape}.*expected \\({expected[0]},"):
        load_encoder(tmp_path, device="cpu")


def test_unexpected_tensor_and_absent_layer_zero_norm(tmp_path: Path) -> None:
    """ModernBERT's layer 0 has no attention norm: a checkpoint carrying one is refused."""
    save_tiny("modernbert", tmp_path)
    extra = "layers.0.attn_norm.weight"

    def add(tensors: dict[str, torch.Tensor]) -> None:
        tensors[extra] = torch.ones(32)

    edit(tmp_path, add)
    with pytest.raises(CheckpointError, match=f"unexpected tensor '{extra}'"):
        load_encoder(tmp_path, device="cpu")


def test_jina_lora_parametrizations_read_the_base_weight(tmp_path: Path) -> None:
    """jina's published checkpoint stores adapted weights as `...parametrizations.weight
    .original` beside per-task LoRA factors: the base weight loads, the adapters are skipped."""
    save_tiny("jina", tmp_path)
    expected = embed(tmp_path)
    name = "encoder.layers.1.mixer.Wqkv"

    def parametrize(tensors: dict[str, torch.Tensor]) -> None:
        tensors[f"{name}.parametrizations.weight.original"] = tensors.pop(f"{name}.weight")
        tensors[f"{name}.parametrizations.weight.0.lora_A"] = torch.randn(5, 4, 32)
        tensors[f"{name}.parametrizations.weight.0.lora_B"] = torch.randn(5, 96, 4)

    edit(tmp_path, parametrize)
    for mine, reference in zip(embed(tmp_path), expected, strict=True):
        torch.testing.assert_close(mine, reference, atol=0, rtol=0)


def test_unsupported_architecture_lists_the_supported_ones(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "t5"}')
    with pytest.raises(ValueError, match="'t5' is not supported; allowed: bert, roberta"):
        load_encoder(tmp_path, device="cpu")
