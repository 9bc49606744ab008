"""The Encoder's arguments: pooling, normalization, dtype, device, input checks."""

from __future__ import annotations

import pytest
import torch

from models import Encoder, load_encoder
from models.batching import group_by_length
from sparse_core import AttentionSpec

DENSE = AttentionSpec("dense")


def test_unknown_pooling_lists_the_allowed_ones(encoder: Encoder) -> None:
    with pytest.raises(ValueError, match="allowed: mean, cls, last, none"):
        encoder.encode_ids([[101, 102]], DENSE, pooling="max")


def test_pooling_shapes_and_normalization(encoder: Encoder) -> None:
    batch = encoder.tokenize(["The licensee may copy the program.", "Short."])
    means = encoder.encode_ids(batch, DENSE, pooling="mean", normalize=False)
    tokens = encoder.encode_ids(batch, DENSE, pooling="none", normalize=False)
    cls = encoder.encode_ids(batch, DENSE, pooling="cls", normalize=True)
    for ids, mean, token_rows, first in zip(batch, means, tokens, cls, strict=True):
        assert mean.shape == first.shape == (encoder.dim,)
        assert token_rows.shape == (len(ids), encoder.dim)
        assert mean.dtype == torch.float32 and mean.device == torch.device("cpu")
        torch.testing.assert_close(mean, token_rows.mean(dim=0))
        torch.testing.assert_close(first, token_rows[0] / token_rows[0].norm())
        assert abs(mean.norm().item() - 1.0) > 1e-3  # normalize=False left it alone


def test_encode_takes_a_string_and_defaults_to_dense_mean(encoder: Encoder) -> None:
    text = "Each contributor grants you a license."
    single = encoder.encode(text)
    assert single.shape == (1, encoder.dim)
    (expected,) = encoder.encode_ids(encoder.tokenize([text]), DENSE, "mean", True)
    torch.testing.assert_close(single[0], expected)
    with pytest.raises(ValueError, match="encode_ids"):
        encoder.encode(text, pooling="none")


def test_returned_tensors_are_ordinary(encoder: Encoder) -> None:
    (vector,) = encoder.encode_ids([[101, 2023, 102]], DENSE)
    vector.mul_(2.0)  # an inference-mode tensor would refuse this
    assert not vector.is_inference()


def test_bad_token_ids_and_empty_inputs_are_refused(encoder: Encoder) -> None:
    with pytest.raises(ValueError, match="outside"):
        encoder.encode_ids([[101, 10**6, 102]], DENSE)
    with pytest.raises(ValueError, match="no tokens"):
        encoder.encode_ids([[101, 102], []], DENSE)
    assert encoder.encode_ids([], DENSE) == []


@pytest.mark.parametrize("dtype", [torch.float16, "float64", "int8"])
def test_cpu_refuses_other_dtypes(dtype) -> None:
    with pytest.raises(ValueError, match="allowed: float32, bfloat16"):
        load_encoder(device="cpu", dtype=dtype)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_refused() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        load_encoder(device="cuda")


def test_bfloat16_on_cpu_stays_close_to_float32(encoder: Encoder, texts_by_length) -> None:
    half = load_encoder(device="cpu", dtype="bfloat16")
    assert half.dtype == torch.bfloat16
    expected = encoder.encode(texts_by_length)
    actual = half.encode(texts_by_length)
    assert actual.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(actual, expected, dim=-1)
    assert cosine.min() > 0.99


def test_groups_bound_padding_and_size() -> None:
    lengths = [100, 7, 60, 300, 40, 299, 8, 150]
    groups = group_by_length(lengths, max_group_tokens=600)
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))
    for group in groups:
        longest = max(lengths[i] for i in group)
        assert len(group) * longest <= 600 or len(group) == 1
        assert all(2 * lengths[i] >= longest for i in group)
    assert [300, 299] in [[lengths[i] for i in group] for group in groups]
