"""Hidden states equal transformers' on tiny random ModernBERT, NomicBert, GTE and jina-v3
checkpoints, for inputs shorter and longer than ModernBERT's local window, alone and padded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models import load_encoder
from sparse_core import AttentionSpec
from tests.models.conftest import TINY
from tests.models.tiny_archs import KINDS, WINDOW, hf_hidden, save_tiny

LENGTHS = [23, 64, 41, 5]  # 5 fits in one local window of 8 (every key seen); the rest do not
DENSE = AttentionSpec("dense")


def random_batch(seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    vocab = TINY["vocab_size"]
    return [torch.randint(4, vocab, (n,), generator=generator).tolist() for n in LENGTHS]


def assert_parity(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> None:
    """Max abs error <= 1e-4 per token, and mean-pooled cosine >= 0.99999 per input."""
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine.shape == reference.shape
        assert (mine - reference).abs().max().item() <= 1e-4
        cosine = F.cosine_similarity(mine.mean(0), reference.mean(0), dim=0)
        assert cosine.item() >= 0.99999


@pytest.mark.parametrize("kind", KINDS)
def test_hidden_states_equal_transformers_alone_and_padded(kind: str, tmp_path: Path) -> None:
    hf_model = save_tiny(kind, tmp_path)
    encoder = load_encoder(tmp_path, device="cpu")
    batch = random_batch()
    assert min(LENGTHS) <= WINDOW < max(LENGTHS)
    # A padded batch on both sides (encode_ids runs it as one padded pass) ...
    encoder.max_group_tokens = 10**6
    padded = encoder.encode_ids(batch, DENSE, pooling="none", normalize=False)
    assert_parity(padded, hf_hidden(hf_model, batch))
    # ... and each input alone.
    for ids in batch:
        (alone,) = encoder.encode_ids([ids], DENSE, pooling="none", normalize=False)
        assert_parity([alone], hf_hidden(hf_model, [ids]))


def test_gte_hub_config_new_reads_like_transformers_gte(tmp_path: Path) -> None:
    """Alibaba's own config.json (model_type "new", flat rope_theta) loads the same weights."""
    hf_model = save_tiny("gte", tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    theta = config.pop("rope_parameters")["rope_theta"]
    config.update(
        model_type="new",
        architectures=["NewModel"],
        rope_theta=theta,
        position_embedding_type="rope",
        pack_qkv=True,
        layer_norm_type="layer_norm",
    )
    (tmp_path / "config.json").write_text(json.dumps(config))
    encoder = load_encoder(tmp_path, device="cpu")
    assert encoder.config.model_type == "new"
    batch = random_batch(1)
    ours = encoder.encode_ids(batch, DENSE, pooling="none", normalize=False)
    assert_parity(ours, hf_hidden(hf_model, batch))


def test_nomic_own_config_reads_like_transformers_nomic_bert(tmp_path: Path) -> None:
    """nomic's config.json spelling (GPT-2 keys, rotary_emb_*, no biases) loads the same."""
    hf_model = save_tiny("nomic_bert", tmp_path)
    nomic = {
        "model_type": "nomic_bert",
        "architectures": ["NomicBertModel"],
        "vocab_size": TINY["vocab_size"],
        "n_embd": TINY["hidden_size"],
        "n_layer": 3,
        "n_head": TINY["num_attention_heads"],
        "n_inner": 256,  # nomic rounds a gated width up to a multiple of 256
        "n_positions": 64,
        "activation_function": "swiglu",
        "rotary_emb_fraction": 1.0,
        "rotary_emb_base": 1000,
        "qkv_proj_bias": False,
        "mlp_fc1_bias": False,
        "mlp_fc2_bias": False,
        "layer_norm_epsilon": 1e-12,
        "max_trained_positions": 48,
        "type_vocab_size": 2,
    }
    # The tiny transformers model has intermediate_size 37; widen it to nomic's rounded 256.
    hf_model.config.intermediate_size = 256
    wide = type(hf_model)(hf_model.config).eval()
    torch.manual_seed(3)
    with torch.no_grad():
        for parameter in wide.parameters():
            parameter.copy_(torch.randn(parameter.shape) * 0.3)
    wide.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(nomic))
    encoder = load_encoder(tmp_path, device="cpu")
    assert encoder.config.intermediate_size == 256
    assert encoder.max_position_embeddings == 48  # max_trained_positions, not n_positions
    batch = random_batch(2)
    ours = encoder.encode_ids(batch, DENSE, pooling="none", normalize=False)
    assert_parity(ours, hf_hidden(wide, batch))


def test_bert_family_reports_learned_dense_layers(tiny_bert_folder: Path) -> None:
    encoder = load_encoder(tiny_bert_folder, device="cpu")
    assert encoder.position_embedding == "learned"
    assert encoder.native_layer_patterns == [{"mode": "dense"}] * 2
    assert encoder.trained_length == encoder.max_position_embeddings == 64


def test_gte_fixed_ntk_scaling_matches_its_published_formula(tmp_path: Path) -> None:
    """GTE v1.5's `rope_scaling: {"type": "ntk", "factor": f}`: base θ·f, every frequency then
    divided by f^(2/d) (its modeling code's fixed NTK). transformers' GteModel, given those
    frequencies, is the reference."""
    hf_model = save_tiny("gte", tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    theta = config["rope_parameters"]["rope_theta"]
    config.update(model_type="new", rope_parameters=None, rope_theta=theta)
    config["rope_scaling"] = {"type": "ntk", "factor": 2.0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    head_dim = TINY["hidden_size"] // TINY["num_attention_heads"]
    exponents = torch.arange(0, head_dim, 2).float() / head_dim
    hf_model.rotary_emb.inv_freq = 1.0 / (theta * 2.0) ** exponents / 2.0 ** (2 / head_dim)

    encoder = load_encoder(tmp_path, device="cpu")
    batch = random_batch(3)
    ours = encoder.encode_ids(batch, DENSE, pooling="none", normalize=False)
    assert_parity(ours, hf_hidden(hf_model, batch))
