"""Payloads computed from a market's state, shared by the REST and WebSocket surfaces:
candles, rolling 24h tickers, the book ticker and the mark price.

Invariant: REST and WebSocket report the same figures because both call these functions;
volumes and prices are formatted from the state's exact integers.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from astra.venues.aster import schemas as wire

from .engine import BUY, SELL
from .markets import format_fixed
from .state import MarketState, bucket_close, bucket_open, now_ms

__all__ = [
    "FUNDING_CLAMP", "INTEREST_RATE", "PREMIUM_DEADBAND", "book_ticker", "funding_rate",
    "kline_of", "mark_index_e8", "mark_price", "mini_ticker", "ticker_24hr", "ticker_stats",
]  # fmt: skip

FUNDING_CLAMP = 0.003  # the premium's share of a funding rate is held within +-0.3 %
INTEREST_RATE = 0.0001  # per funding interval (premiumIndex interestRate, fundingInfo)
# Binance's documented rule, F = P + clamp(I - P, -0.05 %, 0.05 %): a premium P within 0.05 %
# of the interest rate I leaves the rate at I (why real rates sit at 0.01 % per 8 h).
PREMIUM_DEADBAND = 0.0005


def funding_rate(premium: float) -> float:
    """``INTEREST_RATE`` plus the premium's excess over the dead band, held within
    +-``FUNDING_CLAMP`` (so the rate stays within fundingInfo's floor and cap)."""
    excess = premium - INTEREST_RATE
    excess -= max(-PREMIUM_DEADBAND, min(PREMIUM_DEADBAND, excess))
    return INTEREST_RATE + max(-FUNDING_CLAMP, min(FUNDING_CLAMP, excess))


def book_ticker(state: MarketState, kind: str) -> wire.BookTicker | None:
    """The best bid and ask (None while a side is empty); futures add e/E/T."""
    engine = state.engine
    bid, ask = engine.best_bid(), engine.best_ask()
    if bid is None or ask is None:
        return None
    fmt_p, fmt_q = state.market.format_price, state.market.format_qty
    msg = wire.BookTicker(
        u=engine.update_id,
        s=state.market.symbol,
        b=fmt_p(bid),
        B=fmt_q(engine.levels[BUY][bid]),
        a=fmt_p(ask),
        A=fmt_q(engine.levels[SELL][ask]),
    )
    if kind == "perp":
        msg.e, msg.E, msg.T = "bookTicker", now_ms(), state.last_change_ms
    return msg


def mark_price(state: MarketState, index: float | None) -> wire.MarkPriceUpdate:
    """Mark = mid of the book; index = the spot price the flow follows; funding by
    ``funding_rate`` from Binance's premium index, (max(0, bid - index) - max(0, index - ask))
    / index with the best bid and ask as the impact prices: zero while the index lies inside
    the spread, so a momentarily wide book does not move the rate."""
    market = state.market
    engine = state.engine
    index = index or market.start_price
    bid, ask = engine.best_bid(), engine.best_ask()
    unit = 10**market.price_dp
    mark = (bid + ask) / 2 / unit if bid is not None and ask is not None else index
    above = max(0.0, bid / unit - index) if bid is not None else 0.0
    below = max(0.0, index - ask / unit) if ask is not None else 0.0
    rate = funding_rate((above - below) / index)
    eight_h = 8 * 3600 * 1000
    now = now_ms()
    return wire.MarkPriceUpdate(
        e="markPriceUpdate",
        E=now,
        s=market.symbol,
        p=f"{mark:.8f}",
        i=f"{index:.8f}",
        P=f"{index:.8f}",
        r=f"{rate:.8f}",
        T=now - now % eight_h + eight_h,
    )


def mark_index_e8(state: MarketState, index: float | None) -> tuple[int, int]:
    """``mark_price``'s mark and index exactly, in 10**-8 units, from the numbers (no message
    built, no text parsed): the mark is the exact book mid (``price_dp <= 7``, so it is a
    whole number of units), the index the float rounded half-even to 8 decimals, which is
    what ``f"{index:.8f}"`` writes."""
    market = state.market
    index = index or market.start_price
    index_e8 = int(Decimal(index).scaleb(8).to_integral_value(ROUND_HALF_EVEN))
    bid, ask = state.engine.best_bid(), state.engine.best_ask()
    if bid is None or ask is None:
        return index_e8, index_e8
    return (bid + ask) * 10**8 // (2 * 10**market.price_dp), index_e8


def kline_of(state: MarketState, interval: str, now: int) -> wire.Kline:
    """The candle of ``interval`` containing ``now`` (flat at the last price if no trade)."""
    market = state.market
    open_time = bucket_open(interval, now)
    candles = state.klines(interval, start=open_time, limit=1)
    fmt_p, fmt_q = market.format_price, market.format_qty
    qdp = market.price_dp + market.qty_dp
    if candles:
        c = candles[0]
        return wire.Kline(
            t=c.open_time,
            T=bucket_close(interval, c.open_time),
            s=market.symbol,
            i=interval,
            f=c.first_id,
            L=c.last_id,
            o=fmt_p(c.open),
            c=fmt_p(c.close),
            h=fmt_p(c.high),
            l=fmt_p(c.low),
            v=fmt_q(c.volume),
            n=c.trades,
            x=False,
            q=format_fixed(c.quote, qdp),
            V=fmt_q(c.taker_buy),
            Q=format_fixed(c.taker_buy_quote, qdp),
        )
    last = state.last_trade()
    price = fmt_p(last.price if last else 0)
    return wire.Kline(
        t=open_time,
        T=bucket_close(interval, open_time),
        s=market.symbol,
        i=interval,
        f=-1,
        L=-1,
        o=price,
        c=price,
        h=price,
        l=price,
        v="0",
        n=0,
        x=False,
        q="0",
        V="0",
        Q="0",
    )


def ticker_stats(state: MarketState) -> dict:
    """Rolling 24h figures shared by the tickers (REST and WebSocket)."""
    market = state.market
    fmt_p, fmt_q = market.format_price, market.format_qty
    qdp = market.price_dp + market.qty_dp
    w = state.window()
    last = state.last_trade()
    now = now_ms()
    if w is None or last is None:
        zero_p = fmt_p(last.price if last else 0)
        return dict(
            open=zero_p,
            high=zero_p,
            low=zero_p,
            last=zero_p,
            last_qty=fmt_q(0),
            volume=fmt_q(0),
            quote="0",
            change=fmt_p(0),
            change_pct="0.000",
            wavg=zero_p,
            open_time=now - 86_400_000,
            close_time=now,
            first=-1,
            last_id=-1,
            count=0,
        )
    change = last.price - w.open
    unit = 10**market.price_dp
    wavg = (w.quote / w.volume / unit) if w.volume else 0.0
    return dict(
        open=fmt_p(w.open),
        high=fmt_p(w.high),
        low=fmt_p(w.low),
        last=fmt_p(last.price),
        last_qty=fmt_q(last.qty),
        volume=fmt_q(w.volume),
        quote=format_fixed(w.quote, qdp),
        change=fmt_p(change),
        change_pct=f"{100 * change / w.open:.3f}" if w.open else "0.000",
        wavg=f"{wavg:.{market.price_dp}f}",
        open_time=w.open_time,
        close_time=now,
        first=w.first_id,
        last_id=w.last_id,
        count=w.trades,
    )


def mini_ticker(state: MarketState) -> wire.MiniTicker:
    s = ticker_stats(state)
    return wire.MiniTicker(
        e="24hrMiniTicker",
        E=now_ms(),
        s=state.market.symbol,
        c=s["last"],
        o=s["open"],
        h=s["high"],
        l=s["low"],
        v=s["volume"],
        q=s["quote"],
    )


def ticker_24hr(state: MarketState) -> wire.Ticker24hr:
    s = ticker_stats(state)
    return wire.Ticker24hr(
        e="24hrTicker",
        E=now_ms(),
        s=state.market.symbol,
        p=s["change"],
        P=s["change_pct"],
        w=s["wavg"],
        c=s["last"],
        Q=s["last_qty"],
        o=s["open"],
        h=s["high"],
        l=s["low"],
        v=s["volume"],
        q=s["quote"],
        O=s["open_time"],
        C=s["close_time"],
        F=s["first"],
        L=s["last_id"],
        n=s["count"],
    )
