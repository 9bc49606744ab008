"""The threads that run forward passes: side-by-side streams for short batches on CPU, one wide
thread with every core for long ones.

On a CPU, torch splits each operation of a forward pass over its intra-op threads, and every
operation ends at a barrier where they all wait for the slowest. For the small matrices of a
batch of short texts that split pays poorly, and any other thread on the same cores (the event
loop) stalls the whole pass. Two passes side by side, one thread each, kept the cores busier: on
2 cores, 1.1–1.3× the texts/s of one pass with both threads (benchmarks/serving.py). A long
document is a single input, so it still gets every thread, alone.

torch keeps the intra-op thread count per thread (OpenMP's and MKL's per-thread settings), but a
thread reads the process-wide count on its first parallel operation; each forward thread
therefore makes that first read, then sets its own count, and the process-wide count is put
back afterwards.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

# Auto layout: threads per stream half the threads, between 1 and this ...
MAX_STREAM_THREADS = 4
# ... and at most this many streams (each holds one pass's activations in memory).
MAX_STREAMS = 8


def stream_layout(threads: int, streams: int = 0) -> tuple[int, int]:
    """(streams, intra-op threads per stream) for `threads` intra-op threads in all.

    streams 0 picks them: each stream gets half the threads, at least 1 and at most
    MAX_STREAM_THREADS, unless that would make more than MAX_STREAMS streams (2 threads: 2
    streams of 1; 8: 2 of 4; 16: 4 of 4; 64: 8 of 8). More streams than threads are cut to one
    per thread.
    """
    threads = max(1, threads)
    if streams <= 0:
        per_stream = min(MAX_STREAM_THREADS, max(1, threads // 2))
        per_stream = max(per_stream, -(-threads // MAX_STREAMS))
        return threads // per_stream, per_stream
    streams = min(streams, threads)
    return streams, threads // streams


def _use_threads(count: int) -> None:
    torch.get_num_threads()  # the first read sets this thread up from the process-wide count
    torch.set_num_threads(count)


def _thread(count: int, name: str) -> ThreadPoolExecutor:
    executor = ThreadPoolExecutor(
        1, thread_name_prefix=name, initializer=_use_threads, initargs=(count,)
    )
    executor.submit(torch.get_num_threads).result()  # start it now, so its count is set now
    return executor


class ForwardThreads:
    """`narrow`: one single-thread executor per stream, `per_stream` intra-op threads each;
    `wide`: one with all `threads` (the only stream when there is one).

    Built from the calling thread, whose own and process-wide intra-op counts are set back to
    `threads` once the forward threads are started.
    """

    def __init__(self, streams: int, threads: int) -> None:
        threads = self.threads = max(1, threads)
        self.streams, self.per_stream = stream_layout(threads, streams)
        self.narrow = [_thread(self.per_stream, f"forward-{i}") for i in range(self.streams)]
        self.wide = self.narrow[0] if self.streams == 1 else _thread(threads, "forward-wide")
        torch.set_num_threads(threads)

    def layout(self) -> dict[str, int]:
        return {
            "streams": self.streams,
            "threads_per_stream": self.per_stream,
            "threads": self.threads,
        }

    def shutdown(self) -> None:
        for executor in {*self.narrow, self.wide}:
            executor.shutdown(wait=True)
