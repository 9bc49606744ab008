"""HTTP service: FastAPI app, schemas, settings, dynamic batcher, metrics, CLI (python -m app)."""

import os

# On CPU, idle OpenMP workers sleep instead of spinning. The forward pass shares the cores with
# the event loop (HTTP, JSON, tokenization); spinning workers took CPU from it and made the server
# spend ~1.3× more CPU per short text (benchmarks/service.py). OpenMP reads this once, when torch
# loads, so it is set before the first import of torch; an explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402

__all__ = ["Settings", "create_app"]
