"""Answers of the history queries (``GET /history/...``): what is recorded, a page of past
trades, candles, the book at a past moment.

Units: ``time``/``start``/``end``/``timestamp`` are epoch milliseconds (as everywhere in the
API); fields named ``local…`` are this gateway's receive time in epoch microseconds (what
the recorder stamps, and tardis.dev's ``local_timestamp``).
"""

from __future__ import annotations

import msgspec

from ._models import MemberState, Side

__all__ = [
    "Candle",
    "HistoricalBook",
    "HistoricalLevel",
    "HistoricalTrade",
    "HistoryGap",
    "HistoryMarket",
    "TradesPage",
]


class HistoryMarket(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """One recorded market (``GET /history/markets``): ``dataTypes`` ORDERBOOK and/or TRADE,
    recorded from ``start`` to ``end`` (ms, local receive times of the first and last rows
    on disk), in ``files`` files of ``bytes`` bytes."""

    market: str
    exchange: str
    data_types: list[str]
    start: int
    end: int
    files: int
    bytes: int


class HistoricalTrade(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel",
                      gc=False):
    """A recorded trade: ``Trade``'s fields plus ``localTimestamp`` (µs), when this gateway
    received it."""

    price: float
    quantity: float
    side: Side
    time: int
    trade_id: str | None = None
    local_timestamp: int


class HistoryGap(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """A resync in the record: the feed dropped at ``time`` (ms) and data may be missing
    until it came back; ``reason`` in words."""

    time: int
    reason: str | None = None


class TradesPage(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """``GET /history/trades``: trades ordered by venue time (then by receive order);
    ``nextCursor`` continues after the last one (None: the range is exhausted); ``gaps``:
    trade-feed resyncs between the previous page's last trade and this page's."""

    market: str
    trades: list[HistoricalTrade]
    next_cursor: str | None = None
    gaps: list[HistoryGap] = []


class Candle(msgspec.Struct, kw_only=True, rename="camel", gc=False):
    """``GET /history/candles``: OHLCV of the trades with venue time in
    [time, time + interval); ``time`` is the open time (ms, aligned to the epoch),
    ``volume`` in base units, ``trades`` how many."""

    time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    trades: int


class HistoricalLevel(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """A level of a past book; ``venues`` only on SMART markets (as ``ConsolidatedLevel``)."""

    price: float
    quantity: float
    venues: dict[str, float] | None = None


class HistoricalBook(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """``GET /history/orderbook``: the book as a live client held it at ``time`` (ms, as
    asked): the last snapshot at or before it (``snapshotLocalTimestamp``, µs;
    ``snapshotReason`` start|resync|periodic) plus every update after it up to ``time``;
    ``updateId``/``timestamp``/``localTimestamp`` are the last applied message's. Bids
    descending, asks ascending. SMART markets: levels carry ``venues`` and ``members`` is
    the member states of the last snapshot."""

    market: str
    time: int
    bids: list[HistoricalLevel]
    asks: list[HistoricalLevel]
    update_id: int | None = None
    timestamp: int | None = None
    local_timestamp: int
    snapshot_local_timestamp: int
    snapshot_reason: str | None = None
    members: list[MemberState] | None = None
