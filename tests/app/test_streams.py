"""Forward threads (app.streams) and the batcher's passes on them: short batches side by side,
each on a stream with its share of the intra-op threads, a long batch alone with all of them.

The encoder here records when each pass starts and ends, and how many intra-op threads its
thread runs with; passes block on events the test sets, so every ordering is forced, not timed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
import torch

from app.batcher import Batcher, BatchKey, BatchLimits
from app.metrics import Metrics
from app.streams import ForwardThreads, stream_layout
from sparse_core import AttentionSpec

DENSE = BatchKey(AttentionSpec("dense"), "mean", True)
BLOCK = BatchKey(AttentionSpec("block", block_size=4), "mean", True)
LONG_COST = 1 << 20  # over the short lane's default 1 << 18 pairs
THREADS = 4  # 2 streams of 2 threads, and a wide thread of 4, on any machine


@pytest.fixture(autouse=True)
def restore_threads() -> Iterator[None]:
    """ForwardThreads sets the process-wide intra-op count; put this process's back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("threads", "streams", "layout"),
    [
        (1, 0, (1, 1)),
        (2, 0, (2, 1)),
        (3, 0, (3, 1)),
        (4, 0, (2, 2)),
        (8, 0, (2, 4)),
        (16, 0, (4, 4)),
        (32, 0, (8, 4)),
        (64, 0, (8, 8)),
        (2, 1, (1, 2)),
        (8, 3, (3, 2)),
        (2, 5, (2, 1)),  # more streams than threads: one per thread
        (0, 0, (1, 1)),
    ],
)
def test_stream_layout(threads: int, streams: int, layout: tuple[int, int]) -> None:
    assert stream_layout(threads, streams) == layout


def test_each_forward_thread_runs_with_its_own_intra_op_count() -> None:
    threads = ForwardThreads(0, THREADS)
    try:
        assert threads.layout() == {"streams": 2, "threads_per_stream": 2, "threads": THREADS}
        counts = [stream.submit(torch.get_num_threads).result() for stream in threads.narrow]
        assert counts == [2, 2]
        assert threads.wide.submit(torch.get_num_threads).result() == THREADS
        assert threads.wide not in threads.narrow
        # the thread that built them, and threads started later, get the whole count
        assert torch.get_num_threads() == THREADS
        seen: list[int] = []
        plain = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        plain.start()
        plain.join()
        assert seen == [THREADS]
        later = ForwardThreads(1, THREADS)
        try:
            assert later.wide is later.narrow[0]
            assert later.wide.submit(torch.get_num_threads).result() == THREADS
            assert [s.submit(torch.get_num_threads).result() for s in threads.narrow] == [2, 2]
        finally:
            later.shutdown()
    finally:
        threads.shutdown()


class GatedEncoder:
    """encode_batch waits until the test opens the gate of its batch's first id, recording when
    each pass started and ended, its size and its thread's intra-op count."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.gates: dict[int, threading.Event] = {}
        self.events: list[tuple[str, int]] = []  # ("start" | "end", first id), in order
        self.threads: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.lock = threading.Lock()

    def gate(self, first: int) -> threading.Event:
        return self.gates.setdefault(first, threading.Event())

    def encode_batch(self, batch, attention, pooling, normalize):
        first = batch[0][0]
        with self.lock:
            self.events.append(("start", first))
            self.threads[first] = torch.get_num_threads()
            self.sizes[first] = len(batch)
        assert self.gate(first).wait(timeout=10), f"batch {first} was never released"
        with self.lock:
            self.events.append(("end", first))
        return [torch.tensor([float(ids[0])]) for ids in batch]


async def until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.005)


def run(scenario, streams: int = 2, encoder: GatedEncoder | None = None, **overrides: float):
    encoder = encoder or GatedEncoder()
    values = {"max_batch_tokens": 1000, "max_batch_size": 32, "batch_wait_s": 0.0}
    limits = BatchLimits(**(values | {"queue_size": 100} | overrides))

    async def main():
        batcher = Batcher(encoder, limits, Metrics(), streams)
        assert batcher.threads.threads == torch.get_num_threads()
        batcher.start()
        try:
            return await scenario(batcher, encoder)
        finally:
            for gate in list(encoder.gates.values()):
                gate.set()
            await batcher.close()

    return asyncio.run(main()), encoder


@pytest.fixture
def four_threads() -> None:
    torch.set_num_threads(THREADS)  # restored by restore_threads


def started(encoder: GatedEncoder) -> list[int]:
    return [first for kind, first in encoder.events if kind == "start"]


def test_short_batches_run_side_by_side_each_on_its_share_of_the_threads(four_threads) -> None:
    async def scenario(batcher, encoder):
        dense = batcher.submit([[1, 1]], DENSE)
        await until(lambda: started(encoder) == [1])
        block = batcher.submit([[2, 2]], BLOCK)  # another key: its own pass
        # the second pass starts while the first is still held: two streams
        await until(lambda: started(encoder) == [1, 2])
        encoder.gate(2).set()
        encoder.gate(1).set()
        return [r.embedding.item() for r in await asyncio.gather(*dense, *block)]

    outputs, encoder = run(scenario)
    assert outputs == [1.0, 2.0]
    assert encoder.threads == {1: 2, 2: 2}


def test_with_one_stream_passes_run_one_at_a_time(four_threads) -> None:
    async def scenario(batcher, encoder):
        first = batcher.submit([[1, 1]], DENSE)
        await until(lambda: started(encoder) == [1])
        second = batcher.submit([[2, 2]], BLOCK)
        await asyncio.sleep(0.2)
        assert started(encoder) == [1]  # the only thread is busy
        encoder.gate(1).set()
        await until(lambda: started(encoder) == [1, 2])
        encoder.gate(2).set()
        await asyncio.gather(*first, *second)

    _, encoder = run(scenario, streams=1)
    assert encoder.events == [("start", 1), ("end", 1), ("start", 2), ("end", 2)]
    assert encoder.threads == {1: THREADS, 2: THREADS}


def test_a_long_batch_waits_for_the_streams_then_runs_alone_on_every_thread(four_threads) -> None:
    # and a short batch queued behind it waits its turn, though a stream is free
    async def scenario(batcher, encoder):
        short = batcher.submit([[1, 1]], DENSE)
        await until(lambda: started(encoder) == [1])
        long = batcher.submit([[9] * 40], DENSE, costs=[LONG_COST])
        await asyncio.sleep(0.2)
        later = batcher.submit([[2, 2]], BLOCK)  # a free stream, but the long lane's turn
        await asyncio.sleep(0.2)
        assert started(encoder) == [1]
        encoder.gate(1).set()
        await until(lambda: started(encoder) == [1, 9])
        await asyncio.sleep(0.2)
        assert started(encoder) == [1, 9]  # nothing beside the long pass
        encoder.gate(9).set()
        await until(lambda: started(encoder) == [1, 9, 2])
        encoder.gate(2).set()
        await asyncio.gather(*short, *long, *later)

    _, encoder = run(scenario)
    assert encoder.events == [
        ("start", 1),
        ("end", 1),
        ("start", 9),
        ("end", 9),
        ("start", 2),
        ("end", 2),
    ]
    assert encoder.threads == {1: 2, 9: THREADS, 2: 2}


def test_close_answers_every_input_while_passes_run_side_by_side(four_threads) -> None:
    async def scenario(batcher, encoder):
        futures = batcher.submit([[1, 1]], DENSE) + batcher.submit([[2, 2]], BLOCK)
        await until(lambda: sorted(started(encoder)) == [1, 2])  # either may record first
        futures += batcher.submit([[3] * 40], DENSE, costs=[LONG_COST])
        closing = asyncio.create_task(batcher.close())
        await asyncio.sleep(0.2)
        assert not closing.done()  # it waits for the passes, and the long input behind them
        for first in (1, 2, 3):
            encoder.gate(first).set()
        await closing
        return [r.embedding.item() for r in await asyncio.gather(*futures)]

    outputs, encoder = run(scenario)
    assert outputs == [1.0, 2.0, 3.0]
    assert started(encoder)[2] == 3


def test_a_short_batch_between_long_ones_runs_alone_on_every_thread(four_threads) -> None:
    async def scenario(batcher, encoder):
        short = batcher.submit([[1, 1]], DENSE)
        await until(lambda: started(encoder) == [1])
        first_long = batcher.submit([[9] * 40], DENSE, costs=[LONG_COST])
        second_long = batcher.submit([[8] * 40], BLOCK, costs=[LONG_COST])  # its own pass
        between = batcher.submit([[2, 2]], DENSE)
        for first in (1, 9, 2, 8):
            encoder.gate(first).set()
        await asyncio.gather(*short, *first_long, *between, *second_long)

    _, encoder = run(scenario)
    assert started(encoder) == [1, 9, 2, 8]
    # the short pass between the long ones has no company this turn: it gets every thread
    assert encoder.threads == {1: 2, 9: THREADS, 2: THREADS, 8: THREADS}


def test_a_free_stream_takes_an_even_share_while_another_stream_runs(four_threads) -> None:
    # Before: the free stream took all 22 waiting inputs beside the running 10, and under a closed
    # loop such uneven passes kept their sizes (each pass's clients come back together).
    async def scenario(batcher, encoder):
        running = batcher.submit([[100 + i] for i in range(10)], DENSE)
        await until(lambda: started(encoder) == [100])  # every stream idle: it took all 10
        waiting = batcher.submit([[200 + i] for i in range(22)], DENSE)
        # the free stream takes ceil((22 waiting + 10 running) / 2 streams) = 16
        await until(lambda: started(encoder) == [100, 200])
        await asyncio.sleep(0.2)
        assert started(encoder) == [100, 200]  # the other 6 wait for a stream
        encoder.gate(100).set()
        await until(lambda: started(encoder) == [100, 200, 216])  # and take the next free one
        encoder.gate(200).set()
        encoder.gate(216).set()
        return [r.embedding.item() for r in await asyncio.gather(*running, *waiting)]

    outputs, encoder = run(scenario)
    assert outputs == [float(100 + i) for i in range(10)] + [float(200 + i) for i in range(22)]
    assert encoder.sizes == {100: 10, 200: 16, 216: 6}


def test_a_batch_that_holds_its_even_share_runs_without_waiting_for_company(four_threads) -> None:
    # Two inputs over the cost budget together: the first runs alone at once (its plan is full),
    # leaving one input waiting and one running, so the second's share is 1. Before, it waited
    # the whole batch_wait for company while the other stream ran.
    async def scenario(batcher, encoder):
        futures = batcher.submit([[1], [2]], DENSE, costs=[60, 60])
        # long before the 60 s wait; the two passes start side by side, either may record first
        await until(lambda: sorted(started(encoder)) == [1, 2])
        encoder.gate(1).set()
        encoder.gate(2).set()
        return [r.embedding.item() for r in await asyncio.gather(*futures)]

    outputs, encoder = run(scenario, batch_wait_s=60.0, max_batch_cost=100)
    assert outputs == [1.0, 2.0]
    assert encoder.sizes == {1: 1, 2: 1}


class FailingEncoder(GatedEncoder):
    """A pass whose first id is FAILS raises once its gate opens."""

    FAILS = 3

    def encode_batch(self, batch, attention, pooling, normalize):
        results = super().encode_batch(batch, attention, pooling, normalize)
        if batch[0][0] == self.FAILS:
            raise RuntimeError("a failing pass (raised by the test)")
        return results


def test_the_even_share_ends_with_the_passes_however_they_end(four_threads) -> None:
    # A pass that fails, inputs cancelled while queued and while computing, a short pass that
    # runs wide between long ones: once every pass has ended, a free stream takes everything
    # that waits again (the share counts only inputs of passes still running on the streams).
    async def scenario(batcher, encoder):
        first = batcher.submit([[1]], DENSE)
        await until(lambda: started(encoder) == [1])
        failing = batcher.submit([[3]], DENSE)  # its share is 1: it runs at once, and fails
        await until(lambda: sorted(started(encoder)) == [1, 3])
        queued = batcher.submit([[4], [5]], DENSE)
        queued[0].cancel()
        encoder.gate(3).set()
        await until(lambda: 5 in started(encoder))
        first[0].cancel()  # while its pass computes
        for gate in (1, 5):
            encoder.gate(gate).set()
        await asyncio.gather(*first, *failing, *queued, return_exceptions=True)
        for gate in (9, 10, 6, 200):
            encoder.gate(gate).set()
        long = batcher.submit([[9], [10]], DENSE, costs=[LONG_COST, LONG_COST])
        between = batcher.submit([[6]], DENSE)
        await asyncio.gather(*long, *between)
        waiting = batcher.submit([[200 + i] for i in range(22)], DENSE)
        return await asyncio.gather(*waiting)

    outputs, encoder = run(scenario, encoder=FailingEncoder(), max_batch_cost=LONG_COST)
    assert [r.embedding.item() for r in outputs] == [float(200 + i) for i in range(22)]
    assert 4 not in encoder.sizes  # cancelled while queued: never computed
    assert encoder.threads[6] == THREADS  # the short pass between the long ones ran wide
    assert encoder.sizes[200] == 22  # every stream idle: no share


def test_with_one_stream_a_batch_takes_everything_that_waits(four_threads) -> None:
    async def scenario(batcher, encoder):
        running = batcher.submit([[100 + i] for i in range(10)], DENSE)
        await until(lambda: started(encoder) == [100])
        waiting = batcher.submit([[200 + i] for i in range(22)], DENSE)
        encoder.gate(100).set()
        await until(lambda: started(encoder) == [100, 200])
        encoder.gate(200).set()
        await asyncio.gather(*running, *waiting)

    _, encoder = run(scenario, streams=1)
    assert encoder.sizes == {100: 10, 200: 22}


class ShortEncoder(GatedEncoder):
    """A bug after the pass: one result fewer than inputs."""

    def encode_batch(self, batch, attention, pooling, normalize):
        self.gate(batch[0][0]).set()
        return super().encode_batch(batch, attention, pooling, normalize)[:-1]


@pytest.mark.parametrize("streams", [1, 2])
def test_a_pass_that_fails_after_the_forward_pass_still_answers_its_inputs(streams) -> None:
    async def scenario(batcher, encoder):
        broken = batcher.submit([[1, 1], [1, 2]], DENSE)
        outcomes = await asyncio.wait_for(
            asyncio.gather(*broken, return_exceptions=True), timeout=10
        )
        # the input the broken pass left without a result gets its error, never a hang
        assert isinstance(outcomes[1], ValueError)
        # the batcher goes on, on every stream
        later = batcher.submit([[2, 2]], BLOCK) + batcher.submit([[3, 3]], DENSE)
        return await asyncio.wait_for(asyncio.gather(*later, return_exceptions=True), 10)

    encoder = ShortEncoder()
    limits = BatchLimits(max_batch_tokens=1000, max_batch_size=32, batch_wait_s=0.0, queue_size=100)

    async def main():
        batcher = Batcher(encoder, limits, Metrics(), streams)
        batcher.start()
        try:
            return await scenario(batcher, encoder)
        finally:
            await batcher.close()

    later = asyncio.run(main())
    # single inputs lose their only result: an error, never a hang
    assert all(isinstance(outcome, ValueError) for outcome in later)


def test_warm_up_runs_on_every_stream(four_threads) -> None:
    async def scenario(batcher, encoder):
        names: list[str] = []
        await batcher.run_on_streams(lambda: names.append(threading.current_thread().name))
        return names

    names, _ = run(scenario)
    assert sorted(name.rsplit("_", 1)[0] for name in names) == ["forward-0", "forward-1"]
