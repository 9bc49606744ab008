"""Readiness and draining: loading -> ready -> draining (or failed), and requests in flight."""

from __future__ import annotations

import asyncio
from typing import Literal

State = Literal["loading", "ready", "draining", "failed"]


class Lifecycle:
    """Where the service stands, and how many inference requests it is answering."""

    def __init__(self) -> None:
        self.state: State = "loading"
        self.error: str | None = None
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def mark_ready(self) -> None:
        if self.state == "loading":
            self.state = "ready"

    def mark_failed(self, error: str) -> None:
        self.state, self.error = "failed", error

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def drain(self) -> None:
        """Refuse new inference requests from now on and return once none is in flight."""
        if self.state != "failed":
            self.state = "draining"
        await self._idle.wait()
