"""Dense passes as traced graphs (models.graph): the eager pass's results bit for bit, for every
architecture, at shapes other than the traced one; the GIL left once per pass; shared weights;
thread safety; eager where a graph cannot serve."""

from __future__ import annotations

import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from models import Encoder, load_encoder
from models.batching import pad
from models.graph import DenseGraphs
from sparse_core import AttentionSpec
from tests.models.conftest import TINY, save_tiny_folder
from tests.models.tiny_archs import save_tiny

DENSE = AttentionSpec("dense")
# Batches (lengths of their inputs): alone, equal lengths, ragged, one token, and past the
# tiny checkpoints' 64 trained positions, padded and not.
SHAPES = [[5], [17, 17, 17], [3, 40, 12, 64, 1], [1], [100, 70], [100], [80, 80]]
ALL_DENSE = ("bert", "roberta", "xlm-roberta", "nomic_bert", "gte", "jina")


def random_batch(lengths: list[int], seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    vocab = TINY["vocab_size"]
    return [torch.randint(4, vocab, (n,), generator=generator).tolist() for n in lengths]


def save(kind: str, folder: Path) -> None:
    if kind in ("bert", "roberta", "xlm-roberta"):
        save_tiny_folder(kind, folder)
    else:
        save_tiny(kind, folder)


def hidden(encoder: Encoder, batch: list[list[int]]) -> torch.Tensor:
    return encoder.forward_group(batch, DENSE, "none", False)


@pytest.mark.parametrize("extension", ["copy", "interpolate"])
@pytest.mark.parametrize("kind", ALL_DENSE)
def test_a_graph_pass_equals_the_eager_pass_bit_for_bit(
    kind: str, extension: str, tmp_path: Path
) -> None:
    """Traced on a 2-token input, run on every shape of SHAPES, padded or not."""
    save(kind, tmp_path)
    graph = load_encoder(tmp_path, device="cpu", position_extension=extension)
    eager = load_encoder(tmp_path, device="cpu", position_extension=extension, graph_forward=False)
    assert graph.graph_forward and not eager.graph_forward
    with torch.inference_mode():
        for seed, lengths in enumerate(SHAPES):
            batch = random_batch(lengths, seed)
            assert torch.equal(hidden(graph, batch), hidden(eager, batch)), lengths


def test_the_default_model_runs_its_graph_bit_for_bit(
    encoder: Encoder, texts_by_length: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert encoder.graph_forward
    ids = encoder.tokenize(texts_by_length)
    batches = (ids, ids[:1], [ids[2]] * 3)  # ragged, alone, equal lengths
    with torch.inference_mode():
        graphed = [hidden(encoder, batch) for batch in batches]
        monkeypatch.setattr(encoder, "graphs", None)
        for batch, result in zip(batches, graphed, strict=True):
            assert torch.equal(result, hidden(encoder, batch))


def pad_rows(encoder: Encoder, batch: list[list[int]]) -> tuple:
    """forward_group's arguments to the model: ids, the spec, lengths when a row is padded."""
    ids, lengths = pad(batch, encoder.config.pad_token_id, encoder.device)
    padded = min(map(len, batch)) < ids.shape[1]
    return ids, DENSE, lengths if padded else None


@pytest.mark.parametrize("kind", ["bert", "gte"])  # learned positions; rotary, cast to float32
def test_bfloat16_runs_its_graph_bit_for_bit(kind: str, tmp_path: Path) -> None:
    save(kind, tmp_path)
    graph = load_encoder(tmp_path, device="cpu", dtype="bfloat16")
    eager = load_encoder(tmp_path, device="cpu", dtype="bfloat16", graph_forward=False)
    with torch.inference_mode():
        for seed, lengths in enumerate(([9, 30, 2], [30, 30], [90])):
            batch = random_batch(lengths, seed)
            assert torch.equal(hidden(graph, batch), hidden(eager, batch)), lengths


def python_calls(function) -> int:
    """Python-level calls (functions and C functions) made by this thread while `function` runs."""
    calls = 0

    def count(frame, event, arg) -> None:
        nonlocal calls
        calls += event in ("call", "c_call")

    sys.setprofile(count)
    try:
        function()
    finally:
        sys.setprofile(None)
    return calls


def test_a_graph_pass_returns_to_python_a_fixed_number_of_times(
    encoder: Encoder, tmp_path: Path
) -> None:
    """An eager pass returns to Python at every operation, so its calls grow with the layers;
    a graph pass's do not: the 2-layer tiny BERT and the 6-layer default model make as many."""
    save("bert", tmp_path)
    tiny = load_encoder(tmp_path, device="cpu")
    counts = {}
    with torch.inference_mode():
        for name, model in (("tiny", tiny), ("default", encoder)):
            ids, _, lengths = pad_rows(model, [[2, 5, 6, 7, 3], [2, 9, 3]])
            model.graphs(ids, lengths)  # the first run builds the graph's plan
            counts[name] = (
                python_calls(lambda m=model, i=ids, n=lengths: m.graphs(i, n)),
                python_calls(lambda m=model, i=ids, n=lengths: m.model(i, DENSE, n)),
            )
    (tiny_graph, tiny_eager), (default_graph, default_eager) = counts["tiny"], counts["default"]
    assert tiny_graph == default_graph < 50
    assert default_eager > 2 * tiny_eager > 4 * default_graph


@pytest.mark.parametrize("kind", ["bert", "gte"])  # gte: rotary speeds, a buffer
def test_graphs_share_the_models_weights_and_buffers(kind: str, tmp_path: Path) -> None:
    """No second copy of the model in memory."""
    save(kind, tmp_path)
    encoder = load_encoder(tmp_path, device="cpu")
    for graph in encoder.graphs._graphs.values():
        tensors = [*graph.named_parameters(), *graph.named_buffers()]
        theirs = {name.removeprefix("model."): t.data_ptr() for name, t in tensors}
        model = encoder.model
        ours = {
            name: t.data_ptr() for name, t in [*model.named_parameters(), *model.named_buffers()]
        }
        assert theirs == ours and ours


def test_passes_on_two_threads_at_once_equal_the_same_passes_one_by_one(encoder: Encoder) -> None:
    batches = [random_batch(lengths, seed) for seed, lengths in enumerate(SHAPES * 2)]
    batches = [[[101, *(2000 + i for i in ids), 102] for ids in batch] for batch in batches]
    alone = [encoder.encode_batch(batch, DENSE) for batch in batches]
    with ThreadPoolExecutor(2) as threads:
        together = list(threads.map(encoder.encode_batch, batches, [DENSE] * len(batches)))
    for first, second in zip(alone, together, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_models_with_local_layers_run_eager(tmp_path: Path) -> None:
    """ModernBERT's sliding-window layers decide in Python: no graph."""
    save_tiny("modernbert", tmp_path)
    encoder = load_encoder(tmp_path, device="cpu")
    assert encoder.graphs is not None and not encoder.graph_forward


class RefusingGraphs(DenseGraphs):
    """Graphs that refuse to run once `refusing` is set (after their check at load)."""

    refusing = False

    def __call__(self, ids: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        if self.refusing:
            raise AssertionError("the graph ran a pass that is not dense")
        return super().__call__(ids, lengths)


def test_other_modes_run_eager(encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    graphs = RefusingGraphs(encoder.model)
    graphs.refusing = True
    monkeypatch.setattr(encoder, "graphs", graphs)
    block = AttentionSpec("block", block_size=4)
    assert encoder.graph_forward and not encoder.graphs.runs(block)
    (vector,) = encoder.encode_ids([[101, 2023, 2003, 102]], block)
    assert vector.shape == (encoder.dim,)


def test_a_graph_that_differs_from_the_eager_pass_at_load_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A Python decision on the length, frozen at the traced length, is caught at load."""
    from models.positions import CopiedPositions

    learned = CopiedPositions.forward

    def branching(self, n: int, lengths: torch.Tensor | None) -> torch.Tensor:
        table = learned(self, n, lengths)
        return table * 2 if n > 4 else table

    monkeypatch.setattr(CopiedPositions, "forward", branching)
    save("bert", tmp_path)
    with caplog.at_level(logging.WARNING, logger="models.graph"):
        encoder = load_encoder(tmp_path, device="cpu")
    assert not encoder.graph_forward
    assert "differ from the eager pass" in caplog.text


def test_a_model_the_tracer_cannot_take_runs_eager(
    encoder: Encoder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(*_, **__):
        raise RuntimeError("an operation the tracer does not support")

    monkeypatch.setattr(torch.jit, "trace", fail)
    with caplog.at_level(logging.WARNING, logger="models.graph"):
        graphs = DenseGraphs(encoder.model)
    assert not graphs.runs(DENSE)
    assert "dense passes run eager" in caplog.text


def test_lengths_of_the_wrong_shape_are_refused_as_the_eager_pass_refuses_them(
    encoder: Encoder,
) -> None:
    ids, _, lengths = pad_rows(encoder, [[101, 7, 8, 102], [101, 102]])
    with torch.inference_mode(), pytest.raises(ValueError, match="lengths must have shape"):
        encoder.graphs(ids, lengths[:1])
