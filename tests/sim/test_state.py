"""Per-market record: trade and aggregate ids, candles, interval buckets."""

from __future__ import annotations

from datetime import UTC, datetime

from astra.sim import BUY, DEFAULT_MARKETS, SELL
from astra.sim.state import Candle, MarketState, bucket_close, bucket_open

MINUTE = 60_000


def _ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def _eth_spot() -> MarketState:
    market = next(m for m in DEFAULT_MARKETS if m.symbol == "ETHUSDT" and m.kind == "spot")
    return MarketState(market)


def test_trades_and_aggregates_follow_the_taker():
    state = _eth_spot()
    state.place(1, SELL, 3, 100_00)
    state.place(1, SELL, 2, 100_00)
    state.place(1, SELL, 4, 101_00)
    _, fills = state.place(2, BUY, 8)  # market buy sweeps 100.00 x2 orders, then 101.00
    assert [(f.price, f.qty) for f in fills] == [(100_00, 3), (100_00, 2), (101_00, 3)]
    assert [(t.id, t.price, t.qty, t.buyer_maker) for t in state.trades] == [
        (1, 100_00, 3, False),
        (2, 100_00, 2, False),
        (3, 101_00, 3, False),
    ]
    assert [(a.id, a.price, a.qty, a.first, a.last) for a in state.aggs] == [
        (1, 100_00, 5, 1, 2),
        (2, 101_00, 3, 3, 3),
    ]
    candle = state.candles[-1]
    assert (candle.open, candle.high, candle.low, candle.close) == (100_00, 101_00, 100_00, 101_00)
    assert candle.volume == 8 and candle.quote == 100_00 * 5 + 101_00 * 3 and candle.trades == 3
    assert candle.taker_buy == 8 and (candle.first_id, candle.last_id) == (1, 3)
    state.place(3, BUY, 1, 99_00)
    state.place(4, SELL, 1)  # taker sell: the buyer is the maker
    assert state.trades[-1].buyer_maker is True and state.candles[-1].taker_buy == 8


def test_buckets_for_fixed_weekly_and_monthly_intervals():
    t = _ms(2026, 11, 22, 13, 47, 5)  # a Sunday
    assert bucket_open("1m", t) == _ms(2026, 11, 22, 13, 47)
    assert bucket_open("4h", t) == _ms(2026, 11, 22, 12)
    assert bucket_open("1d", t) == _ms(2026, 11, 22)
    assert bucket_open("1w", t) == _ms(2026, 11, 16)  # Monday
    assert bucket_open("1M", t) == _ms(2026, 11, 1)
    assert bucket_close("1M", _ms(2026, 12, 1)) == _ms(2027, 1, 1) - 1
    assert bucket_close("1h", _ms(2026, 11, 22, 13)) == _ms(2026, 11, 22, 14) - 1


def test_klines_merge_minutes_into_longer_intervals():
    state = _eth_spot()
    base = _ms(2026, 11, 22, 10)
    for i, (price, qty) in enumerate([(100, 1), (103, 2), (99, 3), (101, 4), (102, 5)]):
        candle = Candle(base + i * MINUTE, price, i + 1)
        candle.add(price, qty, i + 1, taker_buy=i % 2 == 0)
        state.candles.append(candle)
    five = state.klines("5m")
    assert len(five) == 1
    k = five[0]
    assert (k.open_time, k.open, k.high, k.low, k.close) == (base, 100, 103, 99, 102)
    assert (k.volume, k.trades, k.first_id, k.last_id, k.taker_buy) == (15, 5, 1, 5, 9)
    three = state.klines("3m", start=base + MINUTE, limit=10)  # from the bucket holding start
    assert [(c.open_time, c.volume) for c in three] == [(base, 6), (base + 3 * MINUTE, 9)]
    assert [c.open_time for c in state.klines("1m", limit=2)] == [
        base + 3 * MINUTE,
        base + 4 * MINUTE,
    ]
    window = state.klines("1m", start=base, end=base + MINUTE)
    assert [(c.open_time, c.close, c.volume) for c in window] == [
        (base, 100, 1),
        (base + MINUTE, 103, 2),
    ]
