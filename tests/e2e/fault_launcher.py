"""`python -m tests.e2e.fault_launcher --host H --port P`: the server exactly as `python -m app`
starts it, except that a forward pass over an input holding OOM_MARKER raises
`torch.cuda.OutOfMemoryError`, as a device that runs out of memory does.

The fault is injected at the encoder's forward entry points (`models.Encoder.encode_batch` and
`encode_ids`), below the batcher: the batcher's own out-of-memory handling (split the batch in
halves, answer 507 for a single input that does not fit) is what runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

# A word the test corpus (Debian's license texts) never holds: an input with it "does not fit".
OOM_MARKER = "zebra"
FORWARD_ENTRY_POINTS = ("encode_batch", "encode_ids")


def holds(sequence: list[int], part: list[int]) -> bool:
    """Whether `part` occurs in `sequence` as a contiguous run."""
    width = len(part)
    return any(
        sequence[start : start + width] == part for start in range(len(sequence) - width + 1)
    )


def inject_out_of_memory() -> None:
    """Make every forward entry point of models.Encoder fail on inputs holding OOM_MARKER."""
    import torch

    from models import Encoder

    marker_ids: dict[int, list[int]] = {}  # per encoder instance: the marker's ids, no specials

    def failing(forward: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(forward)
        def forward_or_fail(self: Encoder, batch: list[list[int]], *args: Any, **kwargs: Any):
            if id(self) not in marker_ids:
                marker_ids[id(self)] = self.tokenize([OOM_MARKER])[0][1:-1]
            if any(holds(ids, marker_ids[id(self)]) for ids in batch):
                raise torch.cuda.OutOfMemoryError(
                    f"CUDA out of memory (injected: a batch of {len(batch)} holds {OOM_MARKER!r})"
                )
            return forward(self, batch, *args, **kwargs)

        return forward_or_fail

    wrapped = [name for name in FORWARD_ENTRY_POINTS if hasattr(Encoder, name)]
    if not wrapped:
        raise RuntimeError(f"models.Encoder has none of {FORWARD_ENTRY_POINTS}: nothing to fail")
    for name in wrapped:
        setattr(Encoder, name, failing(getattr(Encoder, name)))


def main() -> None:
    inject_out_of_memory()
    from app.__main__ import main as serve

    serve()


if __name__ == "__main__":
    main()
