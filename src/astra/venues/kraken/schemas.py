"""Kraken WebSocket v2 messages (``wss://ws.kraken.com/v2``) as msgspec Structs, named and
shaped after Kraken's v2 docs.

Data messages carry ``"channel"`` (``book``, ``trade``, ``heartbeat``, ``status``) and are
decoded as one tagged union on it (``ChannelMessage``); replies to our requests carry
``"method"`` instead (``subscribe``, ``unsubscribe``, ``pong``) and decode as ``MethodResponse``.

v2 sends prices and quantities as JSON numbers (v1 sent strings): they decode to floats here,
and the book checksum re-formats them with the pair's precision (see ``feed.py``).
Timestamps are RFC 3339 strings (``2023-10-06T17:35:55.440295Z``).
"""

from __future__ import annotations

import calendar
import time
from datetime import datetime
from functools import lru_cache
from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

from astra.core import Side
from astra.core import Trade as Trade_

__all__ = [
    "BookData",
    "BookLevel",
    "BookMessage",
    "ChannelMessage",
    "Heartbeat",
    "MethodResponse",
    "StatusData",
    "StatusMessage",
    "TradeData",
    "TradeMessage",
    "rfc3339_ms",
]


@lru_cache(maxsize=16)  # timestamps of consecutive messages share their second
def _epoch_seconds(prefix: str) -> int:
    return calendar.timegm(time.strptime(prefix, "%Y-%m-%dT%H:%M:%S"))


_MILLIS = {f"{i:03d}": i for i in range(1000)}  # "440" -> 440: a lookup, not an int() parse


def rfc3339_ms(ts: str) -> int:
    """Epoch milliseconds of Kraken's ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``."""
    if len(ts) == 27 and ts[19] == "." and ts[26] == "Z":  # what v2 sends: microseconds
        return _epoch_seconds(ts[:19]) * 1000 + int(ts[20:23])
    if len(ts) >= 20 and ts[-1] == "Z" and ts[10] == "T":
        frac = ts[20:-1] if ts[19] == "." else ""
        return _epoch_seconds(ts[:19]) * 1000 + int((frac[:3] or "0").ljust(3, "0"))
    return int(datetime.fromisoformat(ts).timestamp() * 1000)


class BookLevel(msgspec.Struct, gc=False):
    price: float
    qty: float  # absolute; 0 removes the level


class BookData(msgspec.Struct, gc=False):
    """One symbol's book snapshot or update; ``checksum`` covers the top 10 levels a side
    after the message is applied (snapshots included, unlike v1)."""

    symbol: str
    checksum: int
    bids: list[BookLevel] = []
    asks: list[BookLevel] = []
    timestamp: str | UnsetType = UNSET  # updates; recent snapshots too

    def to_changes(self) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """Bid and ask changes as (price, quantity); quantity 0 deletes the level. Fresh
        lists (the book appends truncation deletes); an update usually touches one side."""
        bids, asks = self.bids, self.asks
        return (
            [(lv.price, lv.qty) for lv in bids] if bids else [],
            [(lv.price, lv.qty) for lv in asks] if asks else [],
        )

    def timestamp_ms(self, default: int) -> int:
        ts = self.timestamp
        if ts is UNSET:
            return default
        if len(ts) == 27 and ts[19] == "." and ts[26] == "Z":  # v2's form, inlined (hot)
            ms = _MILLIS.get(ts[20:23])
            if ms is not None:
                return _epoch_seconds(ts[:19]) * 1000 + ms
        return rfc3339_ms(ts)


class BookMessage(msgspec.Struct, tag_field="channel", tag="book", gc=False):
    """``book``: a ``snapshot`` (after subscribing) then ``update``s; one item in ``data``."""

    type: Literal["snapshot", "update"]
    data: list[BookData]


class TradeData(msgspec.Struct, gc=False):
    symbol: str
    side: Literal["buy", "sell"]  # the taker's side
    price: float
    qty: float
    ord_type: str
    trade_id: int  # sequential per pair
    timestamp: str

    def to_trade(self) -> Trade_:
        return Trade_(
            price=self.price,
            quantity=self.qty,
            side=Side.BUY if self.side == "buy" else Side.SELL,
            time=rfc3339_ms(self.timestamp),
            trade_id=str(self.trade_id),
        )


class TradeMessage(msgspec.Struct, tag_field="channel", tag="trade", gc=False):
    """``trade``: the last 50 trades as ``snapshot`` (when requested), then ``update``s."""

    type: Literal["snapshot", "update"]
    data: list[TradeData]


class Heartbeat(msgspec.Struct, tag_field="channel", tag="heartbeat"):
    """About once a second while subscribed and otherwise idle."""


class StatusData(msgspec.Struct):
    system: str  # online | maintenance | cancel_only | post_only
    api_version: str = ""
    connection_id: int = 0
    version: str = ""


class StatusMessage(msgspec.Struct, tag_field="channel", tag="status"):
    """Sent on connect and when the trading engine's status changes."""

    type: str
    data: list[StatusData]


ChannelMessage = BookMessage | TradeMessage | Heartbeat | StatusMessage


class MethodResponse(msgspec.Struct):
    """Reply to a request (``subscribe``, ``unsubscribe``, ``ping`` -> ``pong``), or any
    message of a channel we do not decode (``channel`` set, ``method`` empty)."""

    method: str = ""
    success: bool | None = None
    error: str | None = None
    req_id: int | None = None
    result: dict | None = None
    channel: str | None = None
    symbol: str | None = None  # some refusals name the pair here, most only in ``error``
