"""Kraken Futures messages as msgspec Structs, named and shaped after Kraken's docs.

WebSocket v1 (``wss://futures.kraken.com/ws/v1``): data messages carry ``"feed"``
(``book_snapshot``, ``book``, ``trade_snapshot``, ``trade``, ``heartbeat``) and decode as one
tagged union on it (``FeedMessage``); everything else carries ``"event"`` (``info`` on connect,
``subscribed``/``unsubscribed``, ``subscribed_failed``/``unsubscribed_failed``, ``error``,
``alert``) and decodes as ``Event``. Prices and quantities are JSON numbers (floats here),
times epoch milliseconds.

REST: ``GET /derivatives/api/v3/history?symbol=`` rows (``HistoryTrade``).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from astra.core import Side
from astra.core import Trade as Trade_

from .schemas import rfc3339_ms

__all__ = [
    "BookDelta",
    "BookLevel",
    "BookSnapshot",
    "Event",
    "FeedMessage",
    "Heartbeat",
    "HistoryTrade",
    "Trade",
    "TradeSnapshot",
]

Levels = list[tuple[float, float]]


class BookLevel(msgspec.Struct, gc=False):
    price: float
    qty: float


class BookSnapshot(msgspec.Struct, tag_field="feed", tag="book_snapshot", gc=False):
    """The whole book of one product, first after subscribing; ``seq`` is the product's book
    sequence number: the next ``book`` delta carries ``seq + 1``."""

    product_id: str
    seq: int
    timestamp: int = 0  # ms
    bids: list[BookLevel] = []
    asks: list[BookLevel] = []

    def to_changes(self) -> tuple[Levels, Levels]:
        """(bids, asks) as (price, quantity)."""
        return [(lv.price, lv.qty) for lv in self.bids], [(lv.price, lv.qty) for lv in self.asks]


class BookDelta(msgspec.Struct, tag_field="feed", tag="book", gc=False):
    """One level of one product: its absolute ``qty`` (0 removes it); ``side`` ``buy`` is a
    bid, ``sell`` an ask."""

    product_id: str
    side: Literal["buy", "sell"]
    seq: int
    price: float
    qty: float
    timestamp: int = 0  # ms

    def to_changes(self) -> tuple[Levels, Levels]:
        """(bids, asks): the one changed level on its side, nothing on the other."""
        level = [(self.price, self.qty)]
        return (level, []) if self.side == "buy" else ([], level)


class Trade(msgspec.Struct, tag_field="feed", tag="trade", gc=False):
    """One matched trade (also the items of a ``trade_snapshot``); ``side`` is the taker's,
    ``seq`` the product's trade sequence number, ``type`` fill/liquidation/termination/block."""

    product_id: str
    uid: str
    side: Literal["buy", "sell"]
    seq: int
    time: int  # ms
    qty: float
    price: float
    type: str = "fill"

    def to_trade(self) -> Trade_:
        return Trade_(
            price=self.price,
            quantity=self.qty,
            side=Side.BUY if self.side == "buy" else Side.SELL,
            time=self.time,
            trade_id=self.uid,
        )


class TradeSnapshot(msgspec.Struct, tag_field="feed", tag="trade_snapshot", gc=False):
    """The product's most recent trades, newest first, sent after subscribing."""

    product_id: str
    trades: list[Trade] = []


class Heartbeat(msgspec.Struct, tag_field="feed", tag="heartbeat"):
    """The ``heartbeat`` feed: the server's time, at a regular interval. (``time`` is
    required: the ``subscribed`` reply to the heartbeat feed is an ``Event``.)"""

    time: int


FeedMessage = BookSnapshot | BookDelta | Trade | TradeSnapshot | Heartbeat


class Event(msgspec.Struct):
    """A reply or notice: ``info`` (on connect), ``subscribed``, ``subscribed_failed``,
    ``unsubscribed``, ``unsubscribed_failed``, ``error``/``alert`` (``message`` says why:
    ``Invalid product id``, ``Invalid feed``, ``Json Error``; no product named)."""

    event: str = ""
    feed: str | None = None
    product_ids: list[str] | None = None
    message: str | None = None
    version: int | None = None


class HistoryTrade(msgspec.Struct, gc=False):
    """A row of ``GET /derivatives/api/v3/history``: the product's recent public trades."""

    time: str  # RFC 3339
    price: float
    size: float
    side: Literal["buy", "sell"]  # the taker's side
    uid: str | None = None
    trade_id: int | None = None
    type: str = "fill"

    def to_trade(self) -> Trade_:
        return Trade_(
            price=self.price,
            quantity=self.size,
            side=Side.BUY if self.side == "buy" else Side.SELL,
            time=rfc3339_ms(self.time),
            trade_id=self.uid or (str(self.trade_id) if self.trade_id is not None else None),
        )
