"""Public REST (markets, book snapshots, recent trades) paced by a venue's limiter.

Every venue prices each public call at its documented weight (the tables live in each venue
package, beside the calls) and takes it from a ``VenueLimiter`` of the budget the venue
documents: per product on Binance (which trading shares, product by product: Binance counts
public and private weight together per IP), per endpoint on OKX, per API on Kraken, per
host on HTX, one per IP on KuCoin, Coinbase and Aster (Aster's is trading's too). Where the
venue counts private calls per account or key (Coinbase, Kraken, KuCoin, HTX, OKX), trading
has a limiter of its own (``Venue.limiter``), so an account's 429 closes no public call.
ccxt's own throttle is off on every public client (``enableRateLimit: False``): it queues
every call without bound.

Invariants:
- A book snapshot is a normal request: first come, first served, waiting at most the
  limiter's ``max_wait`` (else ``RateLimited``, which the snapshot's retry loop honours).
- Recent trades are low priority (``trades``): they take tokens only when the limiter's
  ``reserve`` (a snapshot's weight) remains after them, never hold tokens while waiting, and
  wait at most ``TRADES_MAX_WAIT``; then ``RateLimited`` (429 with ``Retry-After``). So a
  snapshot never waits behind trades.
- Markets loading (``markets``) waits at most ``MARKETS_MAX_WAIT`` for its weight and its
  requests at most ``MARKETS_TIMEOUT``: it cannot hold the budget (or a caller) forever.
- A 429/418 answer closes the limiter's gate (the ``slot`` feeds the exception to
  ``observe``; ccxt clients are also ``attach``ed, which sees ``Retry-After``); a call that
  met one, or found the gate closed, raises ``RateLimited`` with the seconds left, never a
  venue error (503). Only the call's own answer counts: a concurrent call's 429 leaves this
  one's 500, bad symbol or timeout what it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from astra.core import RateLimited

from .limiter import VenueLimiter

__all__ = [
    "MARKETS_MAX_WAIT",
    "MARKETS_TIMEOUT",
    "TRADES_MAX_WAIT",
    "markets",
    "public_limiter",
    "snapshot",
    "trades",
    "weight_for",
]

T = TypeVar("T")

TRADES_MAX_WAIT = 1.0  # seconds a recent-trades fetch may wait for the limiter, then 429
MARKETS_MAX_WAIT = 5.0  # seconds markets loading may wait for its weight
MARKETS_TIMEOUT = 30.0  # seconds markets loading may take in all


def public_limiter(
    code: str,
    *,
    per: float,
    limit: float,
    reserve: float = 0.0,
    burst: float | None = None,
    scope: str | None = None,
) -> VenueLimiter:
    """A limiter for a documented budget of ``limit`` weight per ``per`` seconds; ``burst``
    (default one second's worth) is what may go at once; ``reserve`` is kept from trades;
    ``scope`` names the budget across the cluster (``VenueLimiter.key``)."""
    rate = limit / per
    capacity = max(rate, burst or 0.0, reserve)
    return VenueLimiter(code, rate=rate, capacity=capacity, reserve=reserve, scope=scope)


def weight_for(table: Mapping[int, float], limit: int) -> float:
    """The weight of a request for ``limit`` rows: the first bracket (``{max rows: weight}``,
    ascending) that holds it, else the last."""
    for rows, weight in sorted(table.items()):
        if limit <= rows:
            return weight
    return table[max(table)]


def _limited(limiter: VenueLimiter) -> RateLimited:
    """What a call that met the venue's 429/418 raises (the gate is closed by then)."""
    return RateLimited(
        f"venue {limiter.venue} is rate limiting public requests",
        venue=limiter.venue,
        retry_after=limiter.retry_after() or limiter.backoff_base,
    )


async def _paced(
    limiter: VenueLimiter,
    weight: float,
    fetch: Callable[[], Awaitable[T]],
    *,
    max_wait: float | None = None,
    low_priority: bool = False,
) -> T:
    slot = limiter.slot(weight, max_wait=max_wait, low_priority=low_priority)
    try:
        async with slot:
            return await fetch()
    except RateLimited:
        raise
    except Exception:
        if slot.limited:  # this request's answer was a 429/418 (not a concurrent one's)
            raise _limited(limiter) from None
        raise


async def trades(limiter: VenueLimiter, weight: float, fetch: Callable[[], Awaitable[T]]) -> T:
    """``fetch()`` (recent trades) at low priority: see the module docstring."""
    return await _paced(limiter, weight, fetch, max_wait=TRADES_MAX_WAIT, low_priority=True)


async def snapshot(limiter: VenueLimiter, weight: float, fetch: Callable[[], Awaitable[T]]) -> T:
    """``fetch()`` (a book snapshot) as a normal request."""
    return await _paced(limiter, weight, fetch)


async def markets(
    limiter: VenueLimiter,
    weight: float,
    fetch: Callable[[], Awaitable[T]],
    *,
    within: float = MARKETS_TIMEOUT,
) -> T:
    """``fetch()`` (markets loading, ``weight`` for all its requests), bounded: ``TimeoutError``
    after ``within`` seconds."""

    async def bounded() -> T:
        async with asyncio.timeout(within):
            return await fetch()

    return await _paced(limiter, weight, bounded, max_wait=MARKETS_MAX_WAIT)
