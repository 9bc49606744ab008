"""Awaiting a request's inputs: a client that leaves cancels what is left of its request."""

from __future__ import annotations

import asyncio

import pytest

from app.errors import ClientDisconnected
from app.service import busy_time, gather_or_cancel


def test_a_disconnect_cancels_every_unfinished_input() -> None:
    async def scenario():
        loop = asyncio.get_running_loop()
        futures = [loop.create_future(), loop.create_future()]
        futures[0].set_result("done")
        gone = asyncio.Event()
        gone.set()
        with pytest.raises(ClientDisconnected):
            await gather_or_cancel(futures, gone.wait)
        return futures

    futures = asyncio.run(scenario())
    assert futures[1].cancelled()


@pytest.mark.parametrize(
    ("spans", "seconds"),
    [
        ([], 0.0),
        ([(1.0, 2.0)], 1.0),
        ([(1.0, 2.0), (3.0, 5.0)], 3.0),  # one after another: both count
        ([(1.0, 3.0), (2.0, 4.0)], 3.0),  # side by side on two streams: the overlap once
        ([(2.0, 4.0), (1.0, 5.0)], 4.0),  # one inside the other
        ([(1.0, 2.0), (2.0, 3.0), (2.5, 2.6)], 2.0),
    ],
)
def test_a_requests_inference_time_counts_batches_side_by_side_once(spans, seconds) -> None:
    assert busy_time(spans) == pytest.approx(seconds)
