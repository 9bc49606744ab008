"""`EncoderConfig`: one encoder's shape and wiring, read from a Hugging Face config.json.

Every supported architecture (models/arch/) reads its own config.json keys into this one
dataclass; the shared modules (models/modules.py and its pieces) build the network from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# model_type -> how learned position ids are numbered. BERT counts from 0; RoBERTa-style models
# reserve table rows 0..padding_idx, so their first real position is row padding_idx + 1.
MODEL_TYPES: dict[str, str] = {
    "bert": "bert",
    "roberta": "roberta",
    "xlm-roberta": "roberta",
    "camembert": "roberta",
    "modernbert": "bert",
    "nomic_bert": "bert",
    "new": "bert",
    "gte": "bert",
    "jina_embeddings_v3": "bert",
}
POSITIONS = ("learned", "rotary")
NORM_PLACEMENTS = ("post", "pre")
FEED_FORWARDS = ("mlp", "glu")


@dataclass
class EncoderConfig:
    model_type: str = "bert"
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2  # 0: no token-type table
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    # --- wiring (BERT's by default) ---
    positions: str = "learned"  # "learned" table or "rotary" (RoPE on q and k)
    rope_theta: float = 10000.0  # rotary base of global layers (and of every layer by default)
    local_rope_theta: float | None = None  # rotary base of local layers, where it differs
    rotary_fraction: float = 1.0  # share of head_dim that is rotated (partial rotary below 1)
    rope_ntk_factor: float | None = None  # fixed NTK scaling of the rotary base (GTE)
    norm_placement: str = "post"  # "post": LN(x + f(x)) as BERT; "pre": x + f(LN(x))
    norm_bias: bool = True
    first_attention_norm: bool = True  # pre-norm: ModernBERT's layer 0 has no attention norm
    final_norm: bool = False  # a LayerNorm after the last layer (pre-norm models)
    attention_bias: bool = True  # biases of the q/k/v and output projections
    feed_forward: str = "mlp"  # "mlp": down(act(up x)); "glu": down(act(a) * b)
    glu_activated: int = 1  # which half of the fused up projection the activation reads
    mlp_up_bias: bool = True
    mlp_down_bias: bool = True
    local_layers: tuple[bool, ...] = ()  # per layer: True where it attends within local_window
    local_window: int | None = None  # full span w of local layers: |i - j| <= w / 2
    trained_length: int | None = None  # rotary models: the length they were trained on
    # derived in __post_init__
    head_dim: int = field(init=False)
    rotary_dim: int = field(init=False)  # 0 for learned positions
    position_offset: int = field(init=False)  # table row of position 0
    max_positions: int = field(init=False)  # native positions: trained length

    def __post_init__(self) -> None:
        choose("model_type", self.model_type, tuple(MODEL_TYPES))
        choose("positions", self.positions, POSITIONS)
        choose("norm_placement", self.norm_placement, NORM_PLACEMENTS)
        choose("feed_forward", self.feed_forward, FEED_FORWARDS)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        self.head_dim = self.hidden_size // self.num_attention_heads
        self.local_layers = tuple(self.local_layers) or (False,) * self.num_hidden_layers
        if len(self.local_layers) != self.num_hidden_layers:
            raise ValueError(
                f"{len(self.local_layers)} layer kinds for {self.num_hidden_layers} layers"
            )
        if any(self.local_layers) and (self.local_window is None or self.local_window % 2):
            raise ValueError(f"local_window must be an even integer, got {self.local_window}")
        if self.positions == "rotary":
            # Rotated pairs: an even number of dimensions, at most head_dim.
            self.rotary_dim = int(self.head_dim * self.rotary_fraction) // 2 * 2
            if not 0 < self.rotary_dim <= self.head_dim:
                raise ValueError(f"rotary_fraction {self.rotary_fraction} rotates no dimension")
            self.position_offset = 0
            self.max_positions = self.trained_length or self.max_position_embeddings
            return
        self.rotary_dim = 0
        roberta_style = MODEL_TYPES[self.model_type] == "roberta"
        self.position_offset = self.pad_token_id + 1 if roberta_style else 0
        self.max_positions = self.max_position_embeddings - self.position_offset
        if self.max_positions < 1:
            raise ValueError(
                f"max_position_embeddings {self.max_position_embeddings} leaves no positions after "
                f"the offset {self.position_offset}"
            )

    @classmethod
    def from_file(cls, path: Path) -> EncoderConfig:
        """Read config.json through its architecture's reader (see models.arch)."""
        from models.arch import read_config

        return read_config(Path(path))[0]


def choose(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """value if it is one of allowed, else ValueError naming the field and the allowed values."""
    if value not in allowed:
        raise ValueError(f"{name} {value!r} is not supported; allowed: {', '.join(allowed)}")
    return value
