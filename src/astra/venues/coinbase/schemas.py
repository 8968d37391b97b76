"""Coinbase Advanced Trade WebSocket messages as msgspec Structs, named after the venue's docs.

Every message on ``wss://advanced-trade-ws.coinbase.com`` is an envelope
``{"channel", "client_id", "timestamp", "sequence_num", "events": [...]}``; the envelope's
``channel`` is the tag that picks the Struct (``l2_data`` for the ``level2`` channel,
``market_trades``, ``heartbeats``, ``subscriptions``). Errors are the one exception:
``{"type": "error", "message": "..."}`` with no envelope.

Prices and sizes are decimal strings on the wire; the decoders below run with
``strict=False`` so msgspec converts them straight to floats (one less allocation per level
than keeping the strings). Timestamps stay strings: only the ones we use are parsed.
"""

from __future__ import annotations

import calendar
from datetime import datetime
from typing import Literal

import msgspec

from astra.core import Side
from astra.core import Trade as Trade_

__all__ = [
    "ErrorMessage",
    "HeartbeatEvent",
    "Heartbeats",
    "L2Data",
    "L2Event",
    "L2Update",
    "MarketTrade",
    "MarketTrades",
    "MarketTradesEvent",
    "Message",
    "SubscribeRequest",
    "Subscriptions",
    "SubscriptionsEvent",
    "VenueErrorMessage",
    "decode_message",
    "iso_ms",
]

LevelPairs = list[tuple[float, float]]


class L2Update(msgspec.Struct, gc=False):
    """One price level. ``new_quantity`` is the level's new absolute size ("0" removes it).
    Its ``event_time`` is not kept (the message's ``timestamp`` dates the update): skipping
    it makes the decode cheaper."""

    side: str  # "bid" | "offer"
    price_level: float
    new_quantity: float


class L2Event(msgspec.Struct, gc=False):
    """``type`` "snapshot" (the whole book, first after subscribing) or "update"."""

    type: str
    product_id: str
    updates: list[L2Update]

    def to_changes(self) -> tuple[LevelPairs, LevelPairs]:
        """Bid and ask levels as (price, quantity) floats; quantity 0 deletes the level."""
        bids: LevelPairs = []
        asks: LevelPairs = []
        for u in self.updates:
            side = u.side
            if side == "bid":
                bids.append((u.price_level, u.new_quantity))
            elif side == "offer" or side == "ask":  # the docs say "offer"; accept the obvious twin
                asks.append((u.price_level, u.new_quantity))
            else:  # a protocol change must be loud, never a level on the wrong side
                raise ValueError(f"unknown level2 side {side!r}")
        return bids, asks


class L2Data(msgspec.Struct, tag_field="channel", tag="l2_data", kw_only=True, gc=False):
    """A ``level2`` channel message."""

    client_id: str = ""
    timestamp: str
    sequence_num: int
    events: list[L2Event]


class MarketTrade(msgspec.Struct, gc=False):
    trade_id: str
    product_id: str
    price: float
    size: float
    side: str  # "BUY" | "SELL"
    time: str

    def to_trade(self) -> Trade_:
        """Our model. ``side`` is taken as the taker's side, as ccxt and cryptofeed read it."""
        side = self.side
        if side == "BUY":
            taker = Side.BUY
        elif side == "SELL":
            taker = Side.SELL
        else:
            raise ValueError(f"unknown trade side {side!r}")
        return Trade_(
            price=self.price,
            quantity=self.size,
            side=taker,
            time=iso_ms(self.time),
            trade_id=self.trade_id,
        )


class MarketTradesEvent(msgspec.Struct, gc=False):
    """``type`` "snapshot" (recent trades, sent on subscribe) or "update"; newest first."""

    type: str
    trades: list[MarketTrade]


class MarketTrades(msgspec.Struct, tag_field="channel", tag="market_trades", kw_only=True):
    client_id: str = ""
    timestamp: str
    sequence_num: int
    events: list[MarketTradesEvent]


class HeartbeatEvent(msgspec.Struct, gc=False):
    current_time: str
    heartbeat_counter: int  # a string on the wire


class Heartbeats(msgspec.Struct, tag_field="channel", tag="heartbeats", kw_only=True, gc=False):
    """Sent every second once subscribed; keeps idle subscriptions open."""

    client_id: str = ""
    timestamp: str
    sequence_num: int
    events: list[HeartbeatEvent]


class SubscriptionsEvent(msgspec.Struct, gc=False):
    subscriptions: dict[str, list[str]]


class Subscriptions(msgspec.Struct, tag_field="channel", tag="subscriptions", kw_only=True):
    """The server's answer to every subscribe/unsubscribe: all current subscriptions."""

    client_id: str = ""
    timestamp: str
    sequence_num: int
    events: list[SubscriptionsEvent]


class Envelope(msgspec.Struct, kw_only=True, gc=False):
    """Any other channel: only what the sequence check needs."""

    channel: str
    sequence_num: int | None = None


class ErrorMessage(msgspec.Struct, kw_only=True):
    type: Literal["error"]
    message: str = ""


class SubscribeRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``subscribe``/``unsubscribe`` one channel. ``jwt`` is optional on public channels."""

    type: Literal["subscribe", "unsubscribe"]
    channel: str
    product_ids: list[str] | None = None
    jwt: str | None = None


Message = L2Data | MarketTrades | Heartbeats | Subscriptions

_decode = msgspec.json.Decoder(Message, strict=False).decode
_decode_envelope = msgspec.json.Decoder(Envelope).decode
_decode_error = msgspec.json.Decoder(ErrorMessage).decode


class VenueErrorMessage(ValueError):
    """The venue sent ``{"type": "error"}`` (bad subscription, rate limit, ...)."""


def decode_message(data: bytes | str) -> Message | Envelope:
    """The typed message; an ``Envelope`` for channels we do not parse.
    Raises VenueErrorMessage for the venue's error message, msgspec errors for garbage."""
    try:
        return _decode(data)
    except msgspec.ValidationError:
        pass
    try:
        return _decode_envelope(data)
    except msgspec.ValidationError:
        error = _decode_error(data)  # raises for anything else
        raise VenueErrorMessage(error.message or "error") from None


_MS = {f"{i:03d}": i for i in range(1000)}  # a dict lookup beats int() on the hot path
_SECONDS: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM:SS" -> epoch ms; one miss per second


def iso_ms(text: str) -> int:
    """Epoch milliseconds of an RFC 3339 UTC time such as ``2023-02-09T20:32:50.714964855Z``
    (Coinbase sends up to nanoseconds; any fraction length and a missing one both work)."""
    base = _SECONDS.get(text[:19])
    if base is not None and text[-1] == "Z":
        if text[19] == ".":
            ms = _MS.get(text[20:23])
            if ms is not None:
                return base + ms
        elif len(text) == 20:
            return base
    return _iso_ms(text)


def _iso_ms(text: str) -> int:
    if len(text) >= 20 and text[10] == "T" and text[-1] == "Z" and text[19] in ".Z":
        prefix = text[:19]
        base = _SECONDS.get(prefix)
        if base is None:
            if len(_SECONDS) >= 4096:
                _SECONDS.clear()
            fields = (prefix[0:4], prefix[5:7], prefix[8:10], prefix[11:13], prefix[14:16])
            base = calendar.timegm((*map(int, fields), int(prefix[17:19]))) * 1000
            _SECONDS[prefix] = base
        if len(text) == 20:
            return base
        frac = text[20:-1]
        if frac.isdigit():
            return base + int((frac + "00")[:3])
    # anything else (offsets, spaces): the slow, general parser
    return int(datetime.fromisoformat(text).timestamp() * 1000)
