"""Dense forward passes as TorchScript graphs on CPU: the layers run without the GIL.

An eager forward pass of the default model is about 830 torch operations, and each one returns
to Python, which needs the GIL back. In a server the event loop holds the GIL for up to Python's
switch interval (5 ms) at a time, and a forward thread waits for it at every operation's end:
with two streams under load, passes spent about 7% of their time asleep so, on top of the time
the cores were taken (benchmarks/serving.py). A traced graph runs every operation in C++ and
takes the GIL only to start and to return.

What is traced: `Transformer.forward` for the dense spec, on a tiny input at load, twice: with
padding (lengths given) and without. The tracer records tensor operations, shapes included, so a
graph runs at any batch size and length. What it cannot record is a decision taken in Python; in
a dense pass those depend only on whether lengths is given (the key mask, the rows' index,
interpolated positions), hence the two graphs, and on the layers' specs, so a model with local
layers (ModernBERT's sliding windows, whose kernels branch on the length in Python) runs eager.
tests/models/test_graph.py holds every architecture's graphs against its eager pass, bit for
bit, at many shapes.

Graphs run unoptimized (`torch.jit.optimized_execution(False)`, a per-thread flag): nothing is
specialized to the first shapes seen or recompiled for new ones, and each operation is the one
the eager pass runs. Parameters are the eager model's, shared, not copied.

`torch.jit.trace` is deprecated in torch 2.x in favour of torch.export and torch.compile; neither
gives a Python caller a pass without the GIL short of compiling C++ per model (AOTInductor).
torch is pinned (2.13.0), its deprecation warnings are silenced at trace time only, and if a
trace fails the model runs eager (a logged warning), as with `graph_forward=False`.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from models.batching import pad
from models.modules import Transformer
from sparse_core import AttentionSpec

logger = logging.getLogger("models.graph")
DENSE = AttentionSpec("dense")


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
        except Exception as error:  # an operation the tracer cannot take: run eager
            logger.warning("dense passes run eager: tracing failed: %s", error)
            self._graphs.clear()

    def runs(self, spec: AttentionSpec) -> bool:
        return spec.mode == "dense" and bool(self._graphs)

    def __call__(self, ids: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        graph = self._graphs[lengths is not None]
        with torch.jit.optimized_execution(False):
            return graph(ids) if lengths is None else graph(ids, lengths)
