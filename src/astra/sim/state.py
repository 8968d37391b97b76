"""One simulated market: its matching engine plus the public record the venue serves.

Every order, synthetic or a user's, enters through ``MarketState.place`` / ``cancel``; the
state then records trades, aggregate trades and one-minute candles, and tells its listener
(the stream scheduler) what changed. Nothing else mutates the engine.

Invariants:
- The listener's ``on_book`` is called exactly when the engine's ``update_id`` moved (a
  displayed level changed), never for activity of hidden orders alone (resting, filling or
  canceling one): the diff streams' ``U == previous u + 1`` chain depends on it.
- Trade ids and aggregate trade ids start at 1 and increase by one per trade / aggregate,
  in match order; an aggregate spans the consecutive fills of one taker at one price.
- Candle volumes are exact integers: base volume in quantity units, quote volume in
  ``10**-(price_dp + qty_dp)`` units, so they format back without rounding.
- Every 1m candle covers [open, open + 60s) and its close is the price of its last trade.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Protocol, Self, TypeVar

from .engine import BUY, SELL, Fill, MatchingEngine, Order
from .markets import SimMarket

__all__ = [
    "AggRecord", "Candle", "MarketState", "StateListener", "TradeRecord", "interval_ms",
    "merge_buckets", "since",
]  # fmt: skip

MINUTE = 60_000
_INTERVALS = {
    "1m": 1,
    "3m": 3,
    "5m": 5,
    "15m": 15,
    "30m": 30,
    "1h": 60,
    "2h": 120,
    "4h": 240,
    "6h": 360,
    "8h": 480,
    "12h": 720,
    "1d": 1440,
    "3d": 4320,
    "1w": 10080,
    "1M": 0,
}
KLINE_INTERVALS = tuple(_INTERVALS)
_MONDAY_OFFSET = 4 * 1440 * MINUTE  # 1970-01-01 was a Thursday; weekly candles open on Monday


def interval_ms(interval: str) -> int:
    """Length of a fixed interval in ms (0 for calendar months)."""
    return _INTERVALS[interval] * MINUTE


def bucket_open(interval: str, ts: int) -> int:
    """Open time of the ``interval`` candle that contains ``ts``."""
    if interval == "1M":
        d = datetime.fromtimestamp(ts / 1000, UTC)
        return int(datetime(d.year, d.month, 1, tzinfo=UTC).timestamp() * 1000)
    if interval == "1w":
        span = interval_ms("1w")
        return ts - (ts - _MONDAY_OFFSET) % span
    span = interval_ms(interval)
    return ts - ts % span


class _Bar(Protocol):
    open_time: int

    def merge(self, other: Self) -> None: ...


B = TypeVar("B", bound=_Bar)


def since(candles: Sequence[B], first: int) -> list[B]:
    """The candles (oldest first) opening at or after ``first``; walks from the newest, so
    the cost is proportional to what is returned, not to the whole record."""
    out = []
    for c in reversed(candles):
        if c.open_time < first:
            break
        out.append(c)
    out.reverse()
    return out


def merge_buckets(
    candles: Iterable[B], interval: str, end: int | None, make: Callable[[int, B], B]
) -> list[B]:
    """1m ``candles`` (oldest first) merged into ``interval`` candles, up to those opening
    after ``end``; ``make(open_time, first)`` starts a bucket that ``first`` then merges
    into. A bucket no candle falls in has no candle."""
    out: list[B] = []
    for c in candles:
        if end is not None and c.open_time > end:
            break
        open_time = bucket_open(interval, c.open_time)
        if not out or out[-1].open_time != open_time:
            out.append(make(open_time, c))
        out[-1].merge(c)
    return out


def bucket_close(interval: str, open_time: int) -> int:
    if interval == "1M":
        d = datetime.fromtimestamp(open_time / 1000, UTC)
        year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
        return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000) - 1
    return open_time + interval_ms(interval) - 1


class TradeRecord:
    __slots__ = ("buyer_maker", "id", "price", "qty", "time")

    def __init__(self, id: int, price: int, qty: int, time: int, buyer_maker: bool) -> None:
        self.id = id
        self.price = price
        self.qty = qty
        self.time = time
        self.buyer_maker = buyer_maker


class AggRecord:
    __slots__ = ("buyer_maker", "first", "id", "last", "price", "qty", "time")

    def __init__(
        self, id: int, price: int, qty: int, first: int, last: int, time: int, buyer_maker: bool
    ) -> None:
        self.id = id
        self.price = price
        self.qty = qty
        self.first = first
        self.last = last
        self.time = time
        self.buyer_maker = buyer_maker


class Candle:
    __slots__ = (
        "close",
        "first_id",
        "high",
        "last_id",
        "low",
        "open",
        "open_time",
        "quote",
        "taker_buy",
        "taker_buy_quote",
        "trades",
        "volume",
    )

    def __init__(self, open_time: int, price: int, trade_id: int) -> None:
        self.open_time = open_time
        self.open = self.high = self.low = self.close = price
        self.volume = self.quote = self.taker_buy = self.taker_buy_quote = 0
        self.trades = 0
        self.first_id = self.last_id = trade_id

    def add(self, price: int, qty: int, trade_id: int, taker_buy: bool) -> None:
        self.close = price
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.volume += qty
        self.quote += price * qty
        if taker_buy:
            self.taker_buy += qty
            self.taker_buy_quote += price * qty
        self.trades += 1
        self.last_id = trade_id

    def merge(self, other: Candle) -> None:
        self.close = other.close
        self.high = max(self.high, other.high)
        self.low = min(self.low, other.low)
        self.volume += other.volume
        self.quote += other.quote
        self.taker_buy += other.taker_buy
        self.taker_buy_quote += other.taker_buy_quote
        self.trades += other.trades
        self.last_id = other.last_id


class StateListener(Protocol):
    def on_book(self, state: MarketState) -> None: ...
    def on_trades(
        self, state: MarketState, trades: list[TradeRecord], aggs: list[AggRecord]
    ) -> None: ...


class MarketState:
    """A market's engine and public history. ``history`` bounds the kept trades."""

    def __init__(
        self, market: SimMarket, *, history: int = 20_000, candle_history: int = 2 * 10080
    ) -> None:
        self.market = market
        self.engine = MatchingEngine()
        self.trades: deque[TradeRecord] = deque(maxlen=history)
        self.aggs: deque[AggRecord] = deque(maxlen=history)
        self.candles: deque[Candle] = deque(maxlen=candle_history)  # 1m, oldest first
        self.listener: StateListener | None = None
        # Called with every batch of fills, after the trades are recorded: user orders settle here.
        self.fill_listener: Callable[[MarketState, list[Fill]], None] | None = None
        self.last_change_ms = now_ms()
        self._next_order_id = 1
        self._next_trade_id = 1
        self._next_agg_id = 1

    def next_order_id(self) -> int:
        oid = self._next_order_id
        self._next_order_id += 1
        return oid

    def place(
        self,
        owner: int,
        side: int,
        qty: int,
        price: int | None = None,
        *,
        post_only: bool = False,
        ioc: bool = False,
        fok: bool = False,
        order_id: int | None = None,
        hidden: bool = False,
    ) -> tuple[Order, list[Fill]]:
        """Submit a limit order (``price`` given) or a market order (``price`` None);
        ``hidden`` rests out of the published book (``timeInForce=HIDDEN``)."""
        order = Order(order_id or self.next_order_id(), owner, side, price or 0, qty, hidden)
        before = self.engine.update_id
        fills = self.engine.submit(
            order,
            limit=price is not None,
            post_only=post_only,
            rest=not (ioc or fok),
            all_or_none=fok,
        )
        if fills:
            self._record(fills)
            if self.fill_listener is not None:
                self.fill_listener(self, fills)
        if self.engine.update_id != before:
            self._changed()
        return order, fills

    def cancel(self, order_id: int) -> Order | None:
        before = self.engine.update_id
        order = self.engine.cancel(order_id)
        # A hidden order leaves no published level: telling the feeds would open a diff
        # window at an update id that did not move (an empty event, U == previous u).
        if self.engine.update_id != before:
            self._changed()
        return order

    @property
    def next_trade_id(self) -> int:
        return self._next_trade_id

    def _changed(self) -> None:
        self.last_change_ms = now_ms()
        if self.listener is not None:
            self.listener.on_book(self)
        self.engine.touched.clear()

    def _record(self, fills: list[Fill]) -> None:
        ts = now_ms()
        trades: list[TradeRecord] = []
        aggs: list[AggRecord] = []
        agg: AggRecord | None = None
        for fill in fills:
            buyer_maker = fill.taker_side == SELL
            rec = TradeRecord(self._next_trade_id, fill.price, fill.qty, ts, buyer_maker)
            self._next_trade_id += 1
            trades.append(rec)
            self._candle(ts, fill.price, rec.id).add(
                fill.price, fill.qty, rec.id, fill.taker_side == BUY
            )
            if agg is not None and agg.price == fill.price:
                agg.qty += fill.qty
                agg.last = rec.id
            else:
                agg = AggRecord(
                    self._next_agg_id, fill.price, fill.qty, rec.id, rec.id, ts, buyer_maker
                )
                self._next_agg_id += 1
                aggs.append(agg)
        self.trades.extend(trades)
        self.aggs.extend(aggs)
        if self.listener is not None:
            self.listener.on_trades(self, trades, aggs)

    def _candle(self, ts: int, price: int, trade_id: int) -> Candle:
        open_time = ts - ts % MINUTE
        if self.candles and self.candles[-1].open_time == open_time:
            return self.candles[-1]
        candle = Candle(open_time, price, trade_id)
        self.candles.append(candle)
        return candle

    # -- read side -------------------------------------------------------------------------
    def last_trade(self) -> TradeRecord | None:
        return self.trades[-1] if self.trades else None

    def klines(
        self, interval: str, start: int | None = None, end: int | None = None, limit: int = 500
    ) -> list[Candle]:
        """Candles of ``interval`` built from the 1m record: the first ``limit`` from
        ``start``, or the most recent ``limit`` when no start is given. Periods without
        trades produce no candle."""
        source = self.candles
        if start is not None:
            source = since(source, bucket_open(interval, start))
        out = merge_buckets(source, interval, end, lambda t, c: Candle(t, c.open, c.first_id))
        return out[:limit] if start is not None else out[-limit:]

    def window(self, span_ms: int = 1440 * MINUTE) -> Candle | None:
        """One candle merging the record over the last ``span_ms`` (the 24h ticker's view)."""
        merged: Candle | None = None
        for c in since(self.candles, now_ms() - span_ms - MINUTE + 1):
            if merged is None:
                merged = Candle(c.open_time, c.open, c.first_id)
            merged.merge(c)
        return merged


def now_ms() -> int:
    return time.time_ns() // 1_000_000
