"""Shared fixtures: the bundled model (loaded once), real English texts, tiny random HF folders."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

# transformers / sentence-transformers read this at import: never reach for a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

from models import Encoder, load_encoder

LICENSES = Path("/usr/share/common-licenses")
LICENSE_FILES = ("GPL-3", "Apache-2.0", "MPL-2.0", "LGPL-2.1")


def real_paragraphs() -> list[str]:
    """Paragraphs of real English prose: Debian's license texts, then standard-library docstrings
    (code examples left out), each with its whitespace collapsed."""
    import argparse
    import json
    import subprocess

    texts = [(LICENSES / name).read_text() for name in LICENSE_FILES if (LICENSES / name).is_file()]
    texts += [inspect.getdoc(module) for module in (argparse, json, subprocess, inspect)]
    paragraphs = [p for text in texts for p in text.split("\n\n")]
    prose = [p for p in paragraphs if ">>>" not in p and "\n    " not in p and len(p.split()) > 3]
    return [" ".join(p.split()) for p in prose]


def long_text() -> str:
    """Real text of several thousand tokens (license texts, else docstrings, joined)."""
    return "\n\n".join(real_paragraphs())


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    return load_encoder(device="cpu")


@pytest.fixture(scope="session")
def texts_by_length(encoder: Encoder) -> list[str]:
    """Eight real paragraphs from ~10 to ~250 tokens, spread over that range."""
    paragraphs = sorted(set(real_paragraphs()))
    lengths = dict(zip(paragraphs, map(len, encoder.tokenize(paragraphs)), strict=True))
    chosen: list[str] = []
    for target in (10, 30, 60, 90, 130, 170, 210, 250):
        candidates = [p for p in paragraphs if lengths[p] <= 256 and p not in chosen]
        chosen.append(min(candidates, key=lambda p: abs(lengths[p] - target)))
    return chosen


# --- tiny random Hugging Face folders ---------------------------------------------------------

TINY = {
    "vocab_size": 99,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
}
# Special tokens at ids 0..3 (their list index), then (first, last, unknown) of each family.
SPECIALS = {
    "bert": (["[PAD]", "[UNK]", "[CLS]", "[SEP]"], ("[CLS]", "[SEP]", "[UNK]")),
    "roberta": (["<s>", "<pad>", "</s>", "<unk>"], ("<s>", "</s>", "<unk>")),
}


def write_word_tokenizer(folder: Path, family: str) -> None:
    """A whitespace word-level tokenizer.json: specials at ids 0..3, words "w<id>" after them."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    specials, (first, last, unknown) = SPECIALS[family]
    vocab = {f"w{i}": i for i in range(len(specials), TINY["vocab_size"])}
    vocab.update({token: index for index, token in enumerate(specials)})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=unknown))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{first} $A {last}",
        special_tokens=[(first, vocab[first]), (last, vocab[last])],
    )
    tokenizer.save(str(folder / "tokenizer.json"))


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter drawn afresh (LayerNorms included) so that each one matters to the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


def tiny_hf_model(kind: str) -> torch.nn.Module:
    """A random transformers model; kind: bert, bert-mlm, roberta, roberta-mlm, xlm-roberta."""
    import transformers

    roberta_sized = {"max_position_embeddings": 66, "pad_token_id": 1, "type_vocab_size": 1}
    config, model_class = {
        "bert": (transformers.BertConfig, transformers.BertModel),
        "bert-mlm": (transformers.BertConfig, transformers.BertForMaskedLM),
        "roberta": (transformers.RobertaConfig, transformers.RobertaModel),
        "roberta-mlm": (transformers.RobertaConfig, transformers.RobertaForMaskedLM),
        "xlm-roberta": (transformers.XLMRobertaConfig, transformers.XLMRobertaModel),
    }[kind]
    sizes = {"max_position_embeddings": 64, "pad_token_id": 0}
    config = config(**TINY, **(sizes if kind.startswith("bert") else roberta_sized))
    model = model_class(config).eval()
    randomize(model, seed=len(kind))
    return model


def save_tiny_folder(kind: str, folder: Path) -> torch.nn.Module:
    """Save a tiny random model of `kind` and a tokenizer into folder; returns the HF model."""
    model = tiny_hf_model(kind)
    model.save_pretrained(folder)
    write_word_tokenizer(folder, "bert" if kind.startswith("bert") else "roberta")
    return model


@pytest.fixture
def tiny_bert_folder(tmp_path: Path) -> Path:
    save_tiny_folder("bert", tmp_path)
    return tmp_path
