"""Awaiting a request's inputs: a client that leaves cancels what is left of its request."""

from __future__ import annotations

import asyncio

import pytest

from app.errors import ClientDisconnected
from app.service import gather_or_cancel


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
