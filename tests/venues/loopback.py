"""What the venues' private-stream tests share: a sink that records what a user stream
delivers, a bounded wait on it, and a loopback server for a fake venue's endpoints.

Import as ``from tests.venues.loopback import ...`` (see ``trading_fakes.py``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from astra.core._trading import Balance, Fill, Order

__all__ = ["UserSink", "serve", "until"]


class UserSink:
    """A ``UserDataSink`` that keeps everything: orders and fills in arrival order, each
    balances message, each resync reason; ``changed`` is set on every delivery."""

    def __init__(self) -> None:
        self.orders: list[Order] = []
        self.fills: list[Fill] = []
        self.balances: list[list[Balance]] = []
        self.resyncs: list[str] = []
        self.changed = asyncio.Event()

    def on_orders(self, orders: list[Order], fills: list[Fill]) -> None:
        self.orders += orders
        self.fills += fills
        self.changed.set()

    def on_balances(self, balances: list[Balance]) -> None:
        self.balances.append(balances)
        self.changed.set()

    def on_resync(self, reason: str) -> None:
        self.resyncs.append(reason)
        self.changed.set()


async def until(check, *events: asyncio.Event, seconds: float = 8.0) -> None:
    """Until ``check()`` holds, woken by any of ``events`` (and every 0.2 s), bounded."""
    async with asyncio.timeout(seconds):
        while not check():
            for event in events:
                event.clear()
            if check():
                return
            waiters = [asyncio.ensure_future(e.wait()) for e in events]
            try:
                await asyncio.wait(waiters, timeout=0.2, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """``app`` on 127.0.0.1 at a free port: yields ``http://127.0.0.1:<port>``; cleaned up
    afterwards (open connections get a second to finish)."""
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
