"""Tiny random checkpoints of the long-context architectures, built with transformers' own
config and model classes and saved with `save_pretrained` (so in the hub's tensor names).

Each kind is small enough for inputs of 16k tokens to run in seconds on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.models.conftest import TINY, randomize, write_word_tokenizer

WINDOW = 8  # ModernBERT's local_attention here: |i - j| <= 4, so inputs of 5..64 cross it
LONG_KINDS = ("modernbert", "nomic_bert")
KINDS = ("modernbert", "modernbert-biased", "modernbert-mlm", "nomic_bert", "gte", "jina")
# ids: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3 (the "bert" family of write_word_tokenizer)
SPECIAL_IDS = {"pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}


def tiny_config(kind: str, layers: int = 3):
    """transformers config of a tiny `kind`; ModernBERT alternates global, local, local."""
    import transformers

    sizes = {**TINY, "num_hidden_layers": layers}
    if kind.startswith("modernbert"):
        biased = kind == "modernbert-biased"
        return transformers.ModernBertConfig(
            **sizes,
            **SPECIAL_IDS,
            cls_token_id=2,
            sep_token_id=3,
            local_attention=WINDOW,
            global_attn_every_n_layers=3,
            max_position_embeddings=64,
            attention_bias=biased,
            mlp_bias=biased,
            norm_bias=biased,
        )
    if kind == "nomic_bert":
        return transformers.NomicBertConfig(**sizes, pad_token_id=0, max_position_embeddings=64)
    if kind == "gte":
        return transformers.GteConfig(
            **sizes, pad_token_id=0, max_position_embeddings=64, hidden_dropout_prob=0.0
        )
    if kind == "jina":
        return transformers.JinaEmbeddingsV3Config(
            **sizes, **SPECIAL_IDS, max_position_embeddings=64, hidden_dropout_prob=0.0
        )
    raise ValueError(kind)


def tiny_model(kind: str, layers: int = 3) -> torch.nn.Module:
    """A random transformers model of `kind`, in eval mode, every parameter drawn afresh."""
    import transformers

    classes = {
        "modernbert": transformers.ModernBertModel,
        "modernbert-biased": transformers.ModernBertModel,
        "modernbert-mlm": transformers.ModernBertForMaskedLM,
        "nomic_bert": transformers.NomicBertModel,
        "gte": transformers.GteModel,
        "jina": transformers.JinaEmbeddingsV3Model,
    }
    model = classes[kind](tiny_config(kind, layers)).eval()
    randomize(model, seed=len(kind) + layers)
    return model


def save_tiny(kind: str, folder: Path, layers: int = 3, **save_options) -> torch.nn.Module:
    """Save a tiny random `kind` and a word-level tokenizer into folder; returns the HF model."""
    model = tiny_model(kind, layers)
    model.save_pretrained(folder, **save_options)
    write_word_tokenizer(folder, "bert")
    return model


def encoder_of(model: torch.nn.Module) -> torch.nn.Module:
    """The bare encoder inside a task model (ModernBertForMaskedLM.model) or the model itself."""
    return getattr(model, "model", model)


def hf_hidden(model: torch.nn.Module, batch: list[list[int]]) -> list[torch.Tensor]:
    """transformers' last hidden states of a right-padded batch, one (len, hidden) per input."""
    longest = max(len(ids) for ids in batch)
    ids = torch.zeros((len(batch), longest), dtype=torch.long)
    mask = torch.zeros((len(batch), longest), dtype=torch.long)
    for row, token_ids in enumerate(batch):
        ids[row, : len(token_ids)] = torch.tensor(token_ids)
        mask[row, : len(token_ids)] = 1
    with torch.no_grad():
        hidden = encoder_of(model)(input_ids=ids, attention_mask=mask).last_hidden_state
    return [hidden[row, : len(token_ids)] for row, token_ids in enumerate(batch)]


def write_sentence_files(folder: Path, pooling: str, prompts: dict | None = None) -> None:
    """modules.json (Transformer, Pooling, Normalize), 1_Pooling/config.json and, with prompts,
    config_sentence_transformers.json."""
    kinds = [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]
    modules = [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (path, kind) in enumerate(kinds)
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": TINY["hidden_size"], "pooling_mode": pooling})
    )
    if prompts is not None:
        (folder / "config_sentence_transformers.json").write_text(json.dumps(prompts))
