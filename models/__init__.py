"""The encoder: a Hugging Face folder -> embeddings, attention via sparse_core, per layer.

Architectures (models/arch/, one module each): BERT, RoBERTa, XLM-R, ModernBERT, NomicBert,
Alibaba GTE (`new`), jina-embeddings-v3 without its adapters.

from models import load_encoder
enc = load_encoder()                      # bundled all-MiniLM-L6-v2
emb = enc.encode(["text"], attention=AttentionSpec("sliding_window", window=512))  # (1, 384)
"""

from models.config import EncoderConfig
from models.encoder import Encoder, load_encoder
from models.pooling import POOLINGS
from models.positions import POSITION_EXTENSIONS
from models.weights import CheckpointError

__all__ = [
    "POOLINGS",
    "POSITION_EXTENSIONS",
    "CheckpointError",
    "Encoder",
    "EncoderConfig",
    "load_encoder",
]
