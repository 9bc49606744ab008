"""Dense forward passes as TorchScript graphs on CPU: the layers run without the GIL.

An eager forward pass of the default model is about 830 torch operations, and each one returns
to Python, which needs the GIL back. In a server the event loop holds the GIL for up to Python's
switch interval (5 ms) at a time, and a forward thread waits for it at every operation's end:
with two streams under load, passes spent about 7% of their time asleep so, on top of the time
the cores were taken (benchmarks/serving.py). A traced graph runs every operation in C++ and
takes the GIL only to start and to return.

What is traced: `Transformer.forward` for the dense spec, on a tiny input at load, twice: with
padding (lengths given) and without. The tracer records tensor operations, shapes included, so a
graph runs at any batch size and length. What it cannot record is a decision taken in Python,
which is kept as it went at trace time. A dense pass takes three: whether lengths is given (the
rows' index, interpolated positions; hence two graphs), whether any row is padded (the padded
graph always masks its keys, and the encoder gives lengths only when a row is padded), and
`attend`'s checks of its inputs' shapes (made at trace time only; the encoder builds them). Each
graph is checked at load against the eager pass, bit for bit, at other shapes, and a model whose
graph differs runs eager. A model with local layers (ModernBERT's sliding windows, whose kernels
branch on the length in Python) is not traced. tests/models/test_graph.py holds every
architecture's graphs against its eager pass at many shapes.

Graphs run unoptimized (`torch.jit.optimized_execution(False)`, a per-thread flag): nothing is
specialized to the first shapes seen or recompiled for new ones, and each operation is the one
the eager pass runs. Parameters are the eager model's, shared, not copied.

`torch.jit.trace` is deprecated in torch 2.x in favour of torch.export and torch.compile; neither
gives a Python caller a pass without the GIL short of compiling C++ per model (AOTInductor).
torch is pinned (2.13.0), its deprecation warnings are silenced at trace time only, and if a
trace fails or its check does, the model runs eager (a logged warning), as with
`graph_forward=False`.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from models.batching import pad
from models.modules import Transformer
from models.patterns import DENSE
from sparse_core import AttentionSpec

logger = logging.getLogger("models.graph")


class _DensePass(nn.Module):
    """The model's dense forward as a module of tensors only, for the tracer."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(ids, DENSE, lengths)


class DenseGraphs:
    """The dense pass of one model as two traced graphs, padded and not; `runs(spec)` says
    whether a pass of `spec` can use them, calling the object runs one: ids (B, n), lengths (B,)
    or None -> (B, n, hidden), as `Transformer.forward`."""

    def __init__(self, model: Transformer) -> None:
        self._graphs: dict[bool, torch.jit.ScriptModule] = {}
        if any(spec.mode != "dense" for spec in model.layer_specs(DENSE)):
            return  # local layers: their kernels decide in Python
        device = model.embeddings.tokens.weight.device
        dense_pass = _DensePass(model).eval()
        examples = {
            False: pad([[0, 0]], 0, device)[:1],  # (ids,)
            True: pad([[0, 0, 0], [0, 0]], 0, device),  # (ids, lengths)
        }
        try:
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                for padded, example in examples.items():
                    self._graphs[padded] = torch.jit.trace(dense_pass, example, check_trace=False)
            self._check(model, device)
        except Exception as error:  # an operation the tracer cannot take, or a wrong graph
            logger.warning("dense passes run eager: %s", error)
            self._graphs.clear()

    def _check(self, model: Transformer, device: torch.device) -> None:
        """Raise unless each graph gives the eager pass's results, bit for bit, on shapes other
        than the traced ones (more rows and tokens, a one-token row)."""
        vocab = model.config.vocab_size
        shapes = {False: [[1, 2, 3, 4, 5]] * 2, True: [[1, 2, 3, 4, 5, 6], [7, 8, 9], [10]]}
        with torch.inference_mode():
            for padded, batch in shapes.items():
                ids, lengths = pad([[i % vocab for i in row] for row in batch], 0, device)
                given = lengths if padded else None
                if not torch.equal(self(ids, given), model(ids, DENSE, given)):
                    raise ValueError(
                        f"the {'padded' if padded else 'unpadded'} graph's results "
                        "differ from the eager pass's"
                    )

    def runs(self, spec: AttentionSpec) -> bool:
        return spec.mode == "dense" and bool(self._graphs)

    def __call__(self, ids: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """lengths: given only when some row is padded (the padded graph always masks)."""
        if lengths is not None and lengths.shape != (ids.shape[0],):
            raise ValueError(
                f"lengths must have shape ({ids.shape[0]},), got {tuple(lengths.shape)}"
            )
        graph = self._graphs[lengths is not None]
        with torch.jit.optimized_execution(False):
            return graph(ids) if lengths is None else graph(ids, lengths)
