"""msgspec models of ``GET /feeds``: the state of each live market-data feed of a gateway.

Invariants:
- JSON names are camelCase (``rename="camel"``); every field is always present (``null``
  where there is nothing to say), so a client reads one fixed shape.
- Times are epoch milliseconds on the gateway's clock; ``latencyMs`` is the venue's event
  time to the gateway's receipt of the last update (it includes the two clocks' skew), and
  ``None`` when the venue sends no event time.
- Reasons are public (``marketdata.channels.public_reason``): no hosts, URLs or
  parenthesized details.
- ``recentResyncs`` is newest first and holds at most ``MAX_RECENT_RESYNCS`` events;
  ``resyncs`` counts every one since the channel started.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["MAX_RECENT_RESYNCS", "FeedStatus", "ResyncEvent"]

MAX_RECENT_RESYNCS = 10


class ResyncEvent(msgspec.Struct, kw_only=True, rename="camel"):
    """One resync of a feed: when (epoch ms) and why."""

    at: int
    reason: str


class FeedStatus(msgspec.Struct, kw_only=True, rename="camel"):
    """One live feed (a market's ``ORDERBOOK`` or ``TRADE`` channel) as the gateway runs it.

    ``state``: ``synced`` (a book in sync, or a trade feed whose subscription is live),
    ``connecting`` (started, never synced), ``resyncing`` (waiting for a fresh snapshot on a
    live connection), ``disconnected`` (the venue's connection is lost; reconnecting).
    """

    market: str
    venue: str
    data_type: Literal["ORDERBOOK", "TRADE"]
    state: Literal["synced", "connecting", "resyncing", "disconnected"]
    since: int
    reason: str | None
    resyncs: int
    recent_resyncs: list[ResyncEvent]
    updates: int
    last_update: int | None
    latency_ms: float | None
    clients: int
