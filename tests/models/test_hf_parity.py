"""Hidden states equal Hugging Face transformers' on tiny random BERT / RoBERTa / XLM-R models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models import load_encoder
from models.graph import DenseGraphs
from sparse_core import AttentionSpec
from tests.models.conftest import TINY, save_tiny_folder

KINDS = ["bert", "bert-mlm", "roberta", "roberta-mlm", "xlm-roberta"]
LENGTHS = [23, 64, 41, 5]  # 64 fills BERT's whole table (and RoBERTa's 64 real positions)


def hf_hidden(model: torch.nn.Module, batch: list[list[int]], pad_id: int) -> list[torch.Tensor]:
    """transformers' last hidden states of a right-padded batch, one (len, hidden) per input."""
    longest = max(len(ids) for ids in batch)
    ids = torch.full((len(batch), longest), pad_id)
    mask = torch.zeros((len(batch), longest), dtype=torch.long)
    for row, token_ids in enumerate(batch):
        ids[row, : len(token_ids)] = torch.tensor(token_ids)
        mask[row, : len(token_ids)] = 1
    encoder = getattr(model, "bert", None) or getattr(model, "roberta", None) or model
    with torch.no_grad():
        hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    return [hidden[row, : len(token_ids)] for row, token_ids in enumerate(batch)]


@pytest.mark.parametrize("kind", KINDS)
def test_hidden_states_equal_transformers(kind: str, tmp_path: Path) -> None:
    hf_model = save_tiny_folder(kind, tmp_path)
    pad_id = hf_model.config.pad_token_id
    generator = torch.Generator().manual_seed(0)
    # Ids above the specials (0..3): RoBERTa numbers positions by where the pad id is not.
    batch = [
        torch.randint(4, TINY["vocab_size"], (n,), generator=generator).tolist() for n in LENGTHS
    ]

    encoder = load_encoder(tmp_path, device="cpu")
    ours = encoder.encode_ids(batch, AttentionSpec("dense"), pooling="none", normalize=False)
    reference = hf_hidden(hf_model, batch, pad_id)

    assert encoder.max_position_embeddings == 64
    for mine, theirs in zip(ours, reference, strict=True):
        assert mine.shape == theirs.shape
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4)


def test_roberta_positions_start_after_padding_idx(tmp_path: Path) -> None:
    """The offset matters: reading RoBERTa's table from row 0 would give other hidden states."""
    hf_model = save_tiny_folder("roberta", tmp_path)
    encoder = load_encoder(tmp_path, device="cpu")
    assert encoder.config.position_offset == hf_model.config.pad_token_id + 1 == 2
    batch = [list(range(4, 40))]
    ours = encoder.encode_ids(batch, AttentionSpec("dense"), pooling="none", normalize=False)[0]
    encoder.model.embeddings.positions.offset = 0
    encoder.graphs = DenseGraphs(encoder.model)  # a graph holds the offset it was traced with
    shifted = encoder.encode_ids(batch, AttentionSpec("dense"), pooling="none", normalize=False)[0]
    assert not torch.allclose(ours, shifted, atol=1e-3)
    torch.testing.assert_close(ours, hf_hidden(hf_model, batch, 1)[0], atol=1e-5, rtol=1e-4)
