"""sentence-transformers settings of a folder: named prompts and pooling modes (last token)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models import load_encoder
from models.pooling import pool
from tests.models.tiny_archs import save_tiny, write_sentence_files

PROMPTS = {"prompts": {"query": "w5 w6 ", "document": "w7 "}, "default_prompt_name": "query"}


@pytest.fixture
def prompted_folder(tmp_path: Path) -> Path:
    save_tiny("nomic_bert", tmp_path)
    write_sentence_files(tmp_path, "mean", PROMPTS)
    return tmp_path


def test_prompts_are_read_and_prepended_by_name(prompted_folder: Path) -> None:
    encoder = load_encoder(prompted_folder, device="cpu")
    assert encoder.prompts == PROMPTS["prompts"]
    assert encoder.default_prompt_name == "query"
    text = "w20 w21 w22"
    (document,) = encoder.tokenize([text], prompt_name="document")
    assert document == encoder.tokenizer(["w7 " + text])[0] == [2, 7, 20, 21, 22, 3]
    # No name: the folder's default prompt, as sentence-transformers applies it.
    assert encoder.tokenize([text]) == encoder.tokenize([text], prompt_name="query")
    assert encoder.tokenize([text])[0] == [2, 5, 6, 20, 21, 22, 3]
    torch.testing.assert_close(
        encoder.encode(text, prompt_name="document")[0],
        encoder.encode_ids([document], encoder.model.native[0])[0],
    )


def test_unknown_prompt_names_the_allowed_ones(prompted_folder: Path) -> None:
    encoder = load_encoder(prompted_folder, device="cpu")
    with pytest.raises(ValueError, match="unknown prompt_name 'passage'; allowed: query, document"):
        encoder.tokenize(["w20"], prompt_name="passage")


def test_folder_without_prompts_has_none(tiny_bert_folder: Path) -> None:
    encoder = load_encoder(tiny_bert_folder, device="cpu")
    assert encoder.prompts == {} and encoder.default_prompt_name is None
    assert encoder.tokenize(["w20"]) == [[2, 20, 3]]
    with pytest.raises(ValueError, match="allowed: none"):
        encoder.tokenize(["w20"], prompt_name="query")


def test_default_prompt_must_be_a_prompt(tmp_path: Path) -> None:
    save_tiny("gte", tmp_path)
    write_sentence_files(tmp_path, "cls", {"prompts": {"query": "q "}, "default_prompt_name": "x"})
    with pytest.raises(ValueError, match="default_prompt_name 'x' is not one of the prompts"):
        load_encoder(tmp_path, device="cpu")


@pytest.mark.parametrize("mode", ["mean", "cls", "lasttoken"])
def test_pooling_mode_of_the_folder_is_the_default(mode: str, tmp_path: Path) -> None:
    save_tiny("gte", tmp_path)
    write_sentence_files(tmp_path, mode)
    encoder = load_encoder(tmp_path, device="cpu")
    expected = {"mean": "mean", "cls": "cls", "lasttoken": "last"}[mode]
    assert encoder.default_pooling == expected and encoder.default_normalize is True


def test_last_token_pooling_takes_each_inputs_last_valid_row() -> None:
    hidden = torch.randn(3, 5, 4)
    lengths = torch.tensor([5, 2, 1])
    hidden[1, 2:] = float("nan")  # padding never reaches the result
    vectors = pool(hidden, lengths, "last", normalize=False)
    torch.testing.assert_close(vectors, torch.stack([hidden[0, 4], hidden[1, 1], hidden[2, 0]]))
