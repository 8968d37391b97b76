"""User data streams (the gateway's ``WS /ws``) through ccxt.pro's watch methods.

One ccxt.pro client per connection attempt, built by the venue with the caller's credentials
on the venue's configured URLs and its loaded markets; concurrent loops of
``watch_orders()``, ``watch_my_trades()`` and ``watch_balance()`` (per product the venue
asks for) feed the sink with normalized orders, fills and balances.

Integrity rule: a user stream has no sequence numbers a client could check, so every
(re)connection attempt, and every failure of any loop, calls the sink's ``on_resync``: the
client re-reads orders and balances over REST. After a failure the whole client is closed,
and a fresh one (fresh token, fresh connections) is built after ``backoff``. Cancelling the
task closes the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from astra.venues.base import UserDataSink, VenueMarket
from astra.venues.ccxt_normalize import (
    balances_from_ccxt,
    ccxt_market,
    fill_from_ccxt,
    order_from_ccxt,
)
from astra.venues.retry import backoff

__all__ = ["UserDataSink", "Watch", "ccxt_symbols", "run_ccxt_user_stream"]

log = logging.getLogger(__name__)


# (what the call yields: "orders" | "trades" | "balance", the call on a client[, the
# account a "balance" watch reads: its ``GET /balances?account=`` value, ``Balance.account``])
Watch = (tuple[str, Callable[[Any], Awaitable[Any]]]
         | tuple[str, Callable[[Any], Awaitable[Any]], str | None])


def ccxt_symbols(client: Any, markets: Iterable[VenueMarket]) -> dict[str, str]:
    """ccxt symbol -> Astra symbol, for every loaded market ccxt knows."""
    out: dict[str, str] = {}
    for market in markets:
        with contextlib.suppress(KeyError):
            out[ccxt_market(client, market)["symbol"]] = market.symbol
    return out


async def _loop(client: Any, watch: Watch, symbols: Mapping[str, str], exchange: str,
                sink: UserDataSink, alive: Callable[[], None]) -> None:
    kind, call, account = watch[0], watch[1], (watch[2] if len(watch) > 2 else None)
    while True:
        result = await call(client)
        alive()
        if kind == "balance":
            balances = balances_from_ccxt(result or {}, exchange, account)
            if balances:
                sink.on_balances(balances)
            continue
        items = [(symbols.get(raw.get("symbol") or ""), raw) for raw in result or ()]
        known = [(market, raw) for market, raw in items if market is not None]
        if not known:
            continue
        if kind == "orders":
            sink.on_orders([order_from_ccxt(_ms(raw), market) for market, raw in known], [])
        else:
            sink.on_orders([], [fill_from_ccxt(raw, market, exchange) for market, raw in known])


async def run_ccxt_user_stream(
    make_client: Callable[[], Any],
    watches: Iterable[Watch],
    symbols: Mapping[str, str],
    exchange: str,
    sink: UserDataSink,
) -> None:
    """Keep ``sink`` supplied until cancelled (see the module docstring)."""
    watches = list(watches)
    attempt = 0

    def alive() -> None:
        nonlocal attempt
        attempt = 0

    while True:
        client = make_client()
        client.open()  # ccxt binds its event loop here (a client with markets never calls it)
        sink.on_resync("user stream (re)connecting")
        try:
            async with asyncio.TaskGroup() as group:
                for watch in watches:
                    group.create_task(_loop(client, watch, symbols, exchange, sink, alive))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a venue, auth or socket failure: back off, never spin
            log.info("%s user stream: %s", exchange, _describe(exc))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(client.close())
        attempt += 1
        sink.on_resync("user stream lost")
        await asyncio.sleep(backoff(attempt))


def _ms(raw: dict) -> dict:
    """ccxt passes some venues' nanosecond order times through (KuCoin spot ``orderTime``):
    anything past year 5000 in milliseconds is taken as nanoseconds."""
    fixed = {k: raw[k] // 1_000_000 for k in ("timestamp", "lastUpdateTimestamp")
             if isinstance(raw.get(k), int) and raw[k] > 100_000_000_000_000}
    return {**raw, **fixed} if fixed else raw


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"[:300]
