"""`python -m app --host H --port P`: serve with uvicorn; SIGTERM/SIGINT drain before exiting.

Draining: /health and new inference requests answer 503 at once, every request already in flight
is answered (for at most LONGENC_DRAIN_TIMEOUT_S), then the server stops listening and exits 0.
A second signal exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from types import FrameType

import uvicorn
from pydantic import ValidationError

from app.lifecycle import Lifecycle
from app.main import create_app
from app.settings import Settings

logger = logging.getLogger("app")

STARTUP_FAILURE = 3
GRACE_AFTER_DRAIN_S = 5  # uvicorn's exit code when the lifespan fails to start


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first SIGTERM/SIGINT drains the app instead of closing at once."""

    def __init__(
        self, config: uvicorn.Config, lifecycle: Lifecycle, drain_timeout_s: float
    ) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.drain_timeout_s = drain_timeout_s
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or not self.started or sig not in (signal.SIGTERM, signal.SIGINT):
            super().handle_exit(sig, frame)
            return
        self._draining = True
        # A signal handler may interrupt the loop anywhere: hand over through the thread-safe call.
        loop = asyncio.get_running_loop()
        loop.call_soon_threadsafe(lambda: loop.create_task(self._drain(sig)))

    async def _drain(self, sig: int) -> None:
        logger.info(
            "%s: draining %d requests in flight", signal.Signals(sig).name, self.lifecycle.in_flight
        )
        try:
            await asyncio.wait_for(self.lifecycle.drain(), self.drain_timeout_s)
            logger.info("drained; shutting down")
        except TimeoutError:
            logger.warning(
                "drain timeout (%.0f s): %d requests still in flight are cut off",
                self.drain_timeout_s,
                self.lifecycle.in_flight,
            )
        self.should_exit = True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="Serve longenc. Every other setting comes from LONGENC_* variables.",
    )
    parser.add_argument("--host", help="interface to bind (LONGENC_HOST)")
    parser.add_argument("--port", type=int, help="TCP port (LONGENC_PORT)")
    args = parser.parse_args(argv)
    overrides = {name: value for name, value in vars(args).items() if value is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        parser.exit(2, f"invalid LONGENC_* setting:\n{error}\n")
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        loop=settings.loop,
        http=settings.http,
        # Once drained, connections still open (a client that never finished its body) get
        # this long before uvicorn cancels them.
        timeout_graceful_shutdown=GRACE_AFTER_DRAIN_S,
    )
    server = DrainingServer(config, app.state.lifecycle, settings.drain_timeout_s)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


if __name__ == "__main__":
    main()
