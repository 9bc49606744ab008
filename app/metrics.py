"""Every Prometheus series of the service, in one registry per app (DESIGN.md §5).

Base units, prefix `longenc_`, labels `mode` (an attention mode of the table, or "none" for a
request rejected before its mode was known) and `status` (the HTTP status code).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

CONTENT_TYPE = CONTENT_TYPE_LATEST
NO_MODE = "none"

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_INPUTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_TOKENS = tuple(2**power for power in range(3, 19))  # 8 .. 262144


class Metrics:
    """The service's series; `render()` gives the Prometheus text format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, cpu seconds
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        registry = self.registry
        self.request_duration = Histogram(
            "longenc_request_duration_seconds",
            "Time from request arrival to response, per inference request",
            ["mode"],
            buckets=_SECONDS,
            registry=registry,
        )
        self.queue_duration = Histogram(
            "longenc_queue_duration_seconds",
            "Time an input waited in the queue before its forward pass started",
            ["mode"],
            buckets=_SECONDS,
            registry=registry,
        )
        self.inference_duration = Histogram(
            "longenc_inference_duration_seconds",
            "Time of one batch's forward pass, pooling included",
            ["mode"],
            buckets=_SECONDS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "longenc_batch_size",
            "Inputs per batch",
            ["mode"],
            buckets=_INPUTS,
            registry=registry,
        )
        self.batch_tokens = Histogram(
            "longenc_batch_tokens",
            "Padded tokens per batch (inputs × longest input), the cost max_batch_tokens bounds",
            ["mode"],
            buckets=_TOKENS,
            registry=registry,
        )
        self.input_tokens = Histogram(
            "longenc_input_tokens",
            "Tokens per input, special tokens included",
            ["mode"],
            buckets=_TOKENS,
            registry=registry,
        )
        self.requests = Counter(
            "longenc_requests",
            "Inference requests answered, by attention mode and HTTP status",
            ["mode", "status"],
            registry=registry,
        )
        self.requests_in_flight = Gauge(
            "longenc_requests_in_flight",
            "Inference requests received and not yet answered",
            registry=registry,
        )
        self.queue_size = Gauge(
            "longenc_queue_size", "Inputs waiting for a forward pass", registry=registry
        )
        self.cancelled_inputs = Counter(
            "longenc_cancelled_inputs",
            "Inputs dropped before their forward pass because their client went away",
            registry=registry,
        )
        self.oom_splits = Counter(
            "longenc_oom_splits",
            "Batches split in halves after a device out-of-memory error",
            ["mode"],
            registry=registry,
        )
        self.gpu_memory_allocated = Gauge(
            "longenc_gpu_memory_allocated_bytes",
            "torch.cuda.memory_allocated of the service's device; 0 on CPU",
            registry=registry,
        )
        self.gpu_memory_reserved = Gauge(
            "longenc_gpu_memory_reserved_bytes",
            "torch.cuda.memory_reserved of the service's device; 0 on CPU",
            registry=registry,
        )
        self.gpu_memory_peak = Gauge(
            "longenc_gpu_memory_peak_bytes",
            "torch.cuda.max_memory_allocated during the last batch of this mode; 0 on CPU",
            ["mode"],
            registry=registry,
        )

        # The encoder's device, once loaded: the allocated/reserved gauges read it at each scrape.
        self.device: torch.device | None = None
        self.gpu_memory_allocated.set_function(self._cuda_reading(torch.cuda.memory_allocated))
        self.gpu_memory_reserved.set_function(self._cuda_reading(torch.cuda.memory_reserved))

    def _cuda_reading(self, read: Callable[[torch.device], int]) -> Callable[[], float]:
        """A gauge function: `read(device)` on CUDA, 0 elsewhere. Any scrape (the main port's
        /metrics or the metrics port's) gets a fresh reading."""

        def reading() -> float:
            device = self.device
            return float(read(device)) if device is not None and device.type == "cuda" else 0.0

        return reading

    def render(self) -> bytes:
        return generate_latest(self.registry)
