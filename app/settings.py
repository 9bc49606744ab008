"""Every setting of the service, read once from `LONGENC_*` environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.attention import Attention
from models import POSITION_EXTENSIONS


class Settings(BaseSettings):
    """Service settings; each field is read from `LONGENC_<FIELD>` (e.g. LONGENC_PORT=8080)."""

    model_config = SettingsConfigDict(env_prefix="LONGENC_", extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="interface to bind; 0.0.0.0 in containers")
    port: int = Field(8000, ge=0, le=65535, description="TCP port")
    model_path: str | None = Field(
        None, description="Hugging Face model folder; unset: the bundled all-MiniLM-L6-v2"
    )
    device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1'")
    dtype: Literal["float32", "float16", "bfloat16"] | None = Field(
        None, description="weights and activations; unset: the encoder's choice for the device"
    )
    position_extension: str = Field(
        "copy", description="how positions beyond the model's table are embedded"
    )
    default_attention: Attention = Field(
        "auto",
        description='attention when a request names none: "auto", a mode name, or a JSON '
        'object like {"mode": "sliding_window", "window": 512}',
    )
    auto_window: int = Field(
        512, ge=2, multiple_of=2, description="window of the sliding window chosen by 'auto'"
    )
    max_input_tokens: int = Field(
        32768, ge=2, description="tokens per input (special tokens included); longer: 422"
    )
    max_dense_tokens: int = Field(
        8192,
        ge=2,
        description="longest input for dense and topk, which score every token pair (O(n²))",
    )
    max_batch_tokens: int = Field(
        16384, ge=1, description="padded tokens (inputs × longest input) per forward pass"
    )
    max_batch_cost: int = Field(
        1 << 24,
        ge=1,
        description="attention token pairs per forward pass; an input costing more runs alone",
    )
    max_request_cost: int = Field(
        1 << 27,
        ge=1,
        description="attention token pairs of all inputs of one request together; beyond: 422",
    )
    short_input_cost: int = Field(
        1 << 18,
        ge=0,
        description="inputs costing at most this many token pairs take the short lane, which "
        "takes turns with long inputs so short requests keep moving",
    )
    max_batch_size: int = Field(32, ge=1, description="inputs per forward pass")
    cpu_threads: int = Field(
        0,
        ge=0,
        le=1024,
        description="torch's intra-op threads on CPU, all streams together; 0: the CPUs this "
        "process may use, its affinity capped by its cgroup's CPU quota (a container's CPU "
        "limit), or OMP_NUM_THREADS when set",
    )
    cpu_streams: int = Field(
        0,
        ge=0,
        le=256,
        description="on CPU, forward passes of short batches that run side by side, the cores "
        "shared out among them (long inputs still get every core); 0 picks: each stream half "
        "the cores, at least 1 and at most 4, and at most 8 streams; 1 runs one pass at a time",
    )
    graph_forward: bool = Field(
        True,
        description="on CPU, dense forward passes run as traced TorchScript graphs, without the "
        "GIL between operations (same results; models with local layers always run eager)",
    )
    batch_wait_ms: float = Field(
        2.0, ge=0, description="how long a batch waits for company before it runs"
    )
    queue_size: int = Field(1024, ge=1, description="inputs waiting at most; beyond: 429")
    max_inputs_per_request: int = Field(256, ge=1, description="inputs in one request")
    max_payload_bytes: int = Field(2_000_000, ge=1, description="request body size; beyond: 413")
    max_response_floats: int = Field(
        1 << 24,
        ge=1,
        description="floats one response may hold (token vectors and chunk lists add up); "
        "beyond: 422",
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="time a client has to send its whole request body; beyond: 408"
    )
    api_key: SecretStr | None = Field(
        None,
        min_length=1,
        description="if set, every route but /health needs 'Authorization: Bearer <key>'",
    )
    public_routes: frozenset[Literal["/info", "/metrics", "/docs", "/openapi.json"]] = Field(
        frozenset(),
        description='routes that stay open with an API key set, e.g. ["/metrics"]',
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="if set, /metrics is also served without a key on this port (keep it on "
        "the internal network)",
    )
    drain_timeout_s: float = Field(
        120.0, gt=0, description="on SIGTERM, how long accepted requests may take to finish"
    )
    warmup: bool = Field(True, description="one forward pass per mode before /health turns 200")
    log_level: str = Field("info", description="uvicorn and app log level")
    loop: Literal["auto", "asyncio", "uvloop"] = Field(
        "auto", description="uvicorn's event loop; auto is uvloop when installed"
    )
    http: Literal["auto", "h11", "httptools"] = Field(
        "auto", description="uvicorn's HTTP/1.1 parser; auto is httptools when installed"
    )

    @field_validator("position_extension")
    @classmethod
    def _known_extension(cls, value: str) -> str:
        if value not in POSITION_EXTENSIONS:
            raise ValueError(
                f"unknown position extension; allowed: {', '.join(POSITION_EXTENSIONS)}"
            )
        return value

    @model_validator(mode="after")
    def _check_limits(self) -> Settings:
        if self.max_inputs_per_request > self.queue_size:
            raise ValueError(
                f"max_inputs_per_request ({self.max_inputs_per_request}) must not exceed "
                f"queue_size ({self.queue_size}): such a request could never be queued"
            )
        return self
