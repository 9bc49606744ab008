"""HTTP service: FastAPI app, schemas, settings, dynamic batcher, metrics, CLI (python -m app)."""

from app.main import create_app
from app.settings import Settings

__all__ = ["Settings", "create_app"]
