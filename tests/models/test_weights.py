"""Weight loading is strict: a missing, unexpected or mis-shaped tensor is an error naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from models import CheckpointError, load_encoder
from sparse_core import AttentionSpec

KEY = "encoder.layer.1.attention.self.key.weight"


def edit_checkpoint(folder: Path, edit) -> None:
    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors")


def test_missing_tensor_is_named(tiny_bert_folder: Path) -> None:
    edit_checkpoint(tiny_bert_folder, lambda tensors: tensors.pop(KEY))
    with pytest.raises(CheckpointError, match=f"missing tensor '{KEY}'"):
        load_encoder(tiny_bert_folder, device="cpu")


def test_wrong_shape_is_named(tiny_bert_folder: Path) -> None:
    name = "embeddings.position_embeddings.weight"

    def shrink(tensors: dict[str, torch.Tensor]) -> None:
        tensors[name] = tensors[name][:32].contiguous()

    edit_checkpoint(tiny_bert_folder, shrink)
    with pytest.raises(
        CheckpointError, match=rf"'{name}' has shape \(32, 32\), expected \(64, 32\)"
    ):
        load_encoder(tiny_bert_folder, device="cpu")


def test_unexpected_tensor_is_named(tiny_bert_folder: Path) -> None:
    extra = "encoder.layer.2.output.dense.weight"  # the config has 2 layers: 0 and 1

    def add(tensors: dict[str, torch.Tensor]) -> None:
        tensors[extra] = torch.zeros(32, 37)

    edit_checkpoint(tiny_bert_folder, add)
    with pytest.raises(CheckpointError, match=f"unexpected tensor '{extra}'"):
        load_encoder(tiny_bert_folder, device="cpu")


def test_pytorch_bin_loads_like_safetensors(tiny_bert_folder: Path) -> None:
    batch = [[2, 10, 20, 30, 3]]
    dense = AttentionSpec("dense")
    expected = load_encoder(tiny_bert_folder, device="cpu").encode_ids(batch, dense)[0]
    file = tiny_bert_folder / "model.safetensors"
    torch.save(load_file(file), tiny_bert_folder / "pytorch_model.bin")
    file.unlink()
    loaded = load_encoder(tiny_bert_folder, device="cpu").encode_ids(batch, dense)[0]
    torch.testing.assert_close(loaded, expected, atol=0, rtol=0)


def test_folder_without_weights_says_what_it_looked_for(tiny_bert_folder: Path) -> None:
    (tiny_bert_folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors, pytorch_model.bin"):
        load_encoder(tiny_bert_folder, device="cpu")
