"""Market-data streams of one simulated venue side (spot or perpetual).

``StreamHub`` maps stream names to subscribers; ``Feeds`` listens to every market's state and
publishes the documented payloads: diff depth (``@depth``, ``@depth@100ms``...), partial
depth, trades (``@trade`` and ``@tradepro``), aggregate trades, book tickers, klines, tickers,
mark prices and, on perpetuals, liquidation orders (``@forceOrder``, ``!forceOrder@arr``: the
latest liquidation of each symbol in each second, as the docs describe).

Integrity rule (the one clients rely on to keep a local book): for each diff stream,
consecutive events satisfy ``U == previous u + 1`` and ``pu == previous u``; an event holds the
absolute quantity, at ``u``, of every level that changed in ``[U, u]`` ("0" when the level is
gone). Accumulators run whether or not anyone subscribes, so a new subscriber joins a chain
that has never skipped. A REST snapshot's ``lastUpdateId`` is the engine's update id at the
moment it was taken, on the same event loop, so ``U <= lastUpdateId + 1 <= u`` bridges exactly.

Each payload is encoded once per publish; combined-stream subscribers share one wrapped
frame. Payloads are built only for streams somebody listens to.
"""

from __future__ import annotations

import re
from typing import Protocol

import msgspec

from astra.venues.aster import schemas as wire

from .engine import BUY, SELL
from .flow import STEP_MS
from .liquidation_feed import ForceOrderFeed
from .state import (
    KLINE_INTERVALS,
    AggRecord,
    MarketState,
    TradeRecord,
    now_ms,
)
from .views import book_ticker, kline_of, mark_price, mini_ticker, ticker_24hr

__all__ = [
    "Feeds",
    "StreamHub",
    "Subscriber",
    "cadences_for",
    "parse_stream",
]

_encode = msgspec.json.Encoder().encode


class Subscriber(Protocol):
    combined: bool

    def deliver(self, frame: bytes) -> None: ...


class StreamHub:
    def __init__(self) -> None:
        self._subs: dict[str, set[Subscriber]] = {}

    def active(self, name: str) -> bool:
        return name in self._subs

    def subscribe(self, sub: Subscriber, name: str) -> None:
        self._subs.setdefault(name, set()).add(sub)

    def unsubscribe(self, sub: Subscriber, name: str) -> None:
        subs = self._subs.get(name)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[name]

    def publish(self, name: str, payload: bytes) -> None:
        subs = self._subs.get(name)
        if not subs:
            return
        wrapped = None
        for sub in tuple(subs):
            if sub.combined:
                if wrapped is None:
                    wrapped = b'{"stream":"%s","data":%s}' % (name.encode(), payload)
                sub.deliver(wrapped)
            else:
                sub.deliver(payload)


def cadences_for(kind: str) -> dict[str, int]:
    """Suffix of a depth stream -> its cadence in ms, as each side's docs list them."""
    if kind == "perp":
        return {"": 250, "@500ms": 500, "@100ms": 100}
    return {"": 1000, "@100ms": 100}


_STREAM = re.compile(
    r"(?P<sym>[a-z0-9]+)@(?P<ch>depth(?P<levels>5|10|20)?(?P<speed>@\d+ms)?|trade|tradepro|"
    r"aggTrade|bookTicker|miniTicker|ticker|kline_(?P<iv>\w+)|markPrice(?P<mps>@1s)?|"
    r"forceOrder)"
)
_PERP_ONLY = ("markPrice", "forceOrder")
# The documented tradepro payload: transaction hash and participants, both withheld.
_TX_HASH = "0X" + "0" * 64
_PARTICIPANTS = ("hidden", "hidden")
_GLOBAL = {
    "spot": {"!miniTicker@arr", "!ticker@arr", "!bookTicker"},
    "perp": {
        "!miniTicker@arr",
        "!ticker@arr",
        "!bookTicker",
        "!markPrice@arr",
        "!markPrice@arr@1s",
        "!forceOrder@arr",
    },
}


def parse_stream(name: str, kind: str, markets: dict[str, MarketState]) -> str | None:
    """Why ``name`` is not a stream of this side, or None when it is valid."""
    if name.startswith("!"):
        return None if name in _GLOBAL[kind] else f"unknown stream '{name}'"
    m = _STREAM.fullmatch(name)
    if m is None:
        return f"unknown stream '{name}'"
    if m["sym"] not in markets:
        return f"unknown symbol '{m['sym']}' in stream '{name}'"
    if m["ch"].startswith("depth") and (m["speed"] or "") not in cadences_for(kind):
        return f"unknown update speed in stream '{name}'"
    if m["iv"] is not None and m["iv"] not in KLINE_INTERVALS:
        return f"unknown kline interval in stream '{name}'"
    if m["ch"].startswith(_PERP_ONLY) and kind != "perp":
        return f"unknown stream '{name}'"
    return None


class _DiffChain:
    """Accumulates changed levels of one market for one diff cadence."""

    __slots__ = ("first", "last_u", "name", "period", "touched")

    def __init__(self, name: str, period: int, update_id: int) -> None:
        self.name = name
        self.period = period  # in steps
        self.first: int | None = None
        self.last_u = update_id
        self.touched: set[tuple[int, int]] = set()


class Feeds:
    """Publishes every stream of one side. ``tick`` is called once per ``STEP_MS``."""

    def __init__(self, kind: str, states: list[MarketState], hub: StreamHub) -> None:
        self.kind = kind
        self.hub = hub
        self.states = {s.market.stream_id: s for s in states}
        self._ticks = 0
        self._chains: dict[str, list[_DiffChain]] = {}
        self._partial_u: dict[str, int] = {}
        self._top: dict[str, tuple] = {}
        self.index_price: dict[str, float] = {}
        self.force_orders = ForceOrderFeed(hub)  # perpetual liquidations, flushed every second
        for sid, state in self.states.items():
            state.listener = self
            self._chains[sid] = [
                _DiffChain(f"{sid}@depth{suffix}", period // STEP_MS, state.engine.update_id)
                for suffix, period in cadences_for(kind).items()
            ]

    # -- StateListener ---------------------------------------------------------------------
    def on_book(self, state: MarketState) -> None:
        sid = state.market.stream_id
        touched = state.engine.touched
        uid = state.engine.update_id
        for chain in self._chains[sid]:
            if chain.first is None:
                chain.first = uid
            chain.touched |= touched
        self._book_ticker(state)

    def on_trades(
        self, state: MarketState, trades: list[TradeRecord], aggs: list[AggRecord]
    ) -> None:
        sid = state.market.stream_id
        fmt_p, fmt_q, symbol = (
            state.market.format_price,
            state.market.format_qty,
            state.market.symbol,
        )
        now = now_ms()
        name = f"{sid}@trade"
        if self.hub.active(name):
            for t in trades:
                self.hub.publish(
                    name,
                    _encode(
                        wire.Trade(
                            e="trade",
                            E=now,
                            s=symbol,
                            t=t.id,
                            p=fmt_p(t.price),
                            q=fmt_q(t.qty),
                            T=t.time,
                            m=t.buyer_maker,
                        )
                    ),
                )
        name = f"{sid}@tradepro"
        if self.hub.active(name):
            for t in trades:
                self.hub.publish(
                    name,
                    _encode(
                        wire.TradePro(
                            e="tradepro",
                            E=now,
                            T=t.time,
                            s=symbol,
                            t=t.id,
                            p=fmt_p(t.price),
                            q=fmt_q(t.qty),
                            h=_TX_HASH,
                            m=_PARTICIPANTS,
                        )
                    ),
                )
        name = f"{sid}@aggTrade"
        if self.hub.active(name):
            spot_m = True if self.kind == "spot" else msgspec.UNSET
            for a in aggs:
                self.hub.publish(
                    name,
                    _encode(
                        wire.AggTrade(
                            e="aggTrade",
                            E=now,
                            s=symbol,
                            a=a.id,
                            p=fmt_p(a.price),
                            q=fmt_q(a.qty),
                            f=a.first,
                            l=a.last,
                            T=a.time,
                            m=a.buyer_maker,
                            M=spot_m,
                        )
                    ),
                )

    # -- clock ------------------------------------------------------------------------------
    def tick(self) -> None:
        """Flush the streams whose period ends on this step."""
        self._ticks += 1
        t = self._ticks
        for sid, state in self.states.items():
            for chain in self._chains[sid]:
                if t % chain.period == 0:
                    self._flush_diff(state, chain)
            for suffix, period in cadences_for(self.kind).items():
                if t % (period // STEP_MS) == 0:
                    for levels in (5, 10, 20):
                        self._partial(state, f"{sid}@depth{levels}{suffix}", levels)
            kline_period = 250 if self.kind == "perp" else 2000
            if t % (kline_period // STEP_MS) == 0:
                for iv in KLINE_INTERVALS:
                    self._kline(state, iv)
            if self.kind == "perp":
                if t % (1000 // STEP_MS) == 0:
                    self._mark_price(state, f"{sid}@markPrice@1s")
                if t % (3000 // STEP_MS) == 0:
                    self._mark_price(state, f"{sid}@markPrice")
        if t % (1000 // STEP_MS) == 0:
            self._tickers()
        if self.kind == "perp":
            if t % (1000 // STEP_MS) == 0:
                self._mark_price_all("!markPrice@arr@1s")
                self.force_orders.flush()
            if t % (3000 // STEP_MS) == 0:
                self._mark_price_all("!markPrice@arr")

    def _levels(self, state: MarketState, side: int, prices: list[int]) -> list[tuple[str, str]]:
        fmt_p, fmt_q = state.market.format_price, state.market.format_qty
        qty = state.engine.levels[side]
        return [(fmt_p(p), fmt_q(qty.get(p, 0))) for p in prices]

    def _flush_diff(self, state: MarketState, chain: _DiffChain) -> None:
        if chain.first is None:
            return
        u = state.engine.update_id
        if self.hub.active(chain.name):
            bids = sorted((p for s, p in chain.touched if s == BUY), reverse=True)
            asks = sorted(p for s, p in chain.touched if s == SELL)
            self.hub.publish(
                chain.name,
                _encode(
                    wire.DepthUpdate(
                        e="depthUpdate",
                        E=now_ms(),
                        T=state.last_change_ms,
                        s=state.market.symbol,
                        U=chain.first,
                        u=u,
                        pu=chain.last_u,
                        b=self._levels(state, BUY, bids),
                        a=self._levels(state, SELL, asks),
                    )
                ),
            )
        chain.last_u = u
        chain.first = None
        chain.touched = set()

    def _partial(self, state: MarketState, name: str, levels: int) -> None:
        if not self.hub.active(name):
            return
        u = state.engine.update_id
        pu = self._partial_u.get(name, u)
        self._partial_u[name] = u
        bids, asks = state.engine.depth(levels)
        fmt_p, fmt_q = state.market.format_price, state.market.format_qty
        b = [(fmt_p(p), fmt_q(q)) for p, q in bids]
        a = [(fmt_p(p), fmt_q(q)) for p, q in asks]
        common = dict(
            e="depthUpdate",
            E=now_ms(),
            T=state.last_change_ms,
            s=state.market.symbol,
            U=min(pu + 1, u),  # nothing changed since the last frame: U = u
            u=u,
            pu=pu,
        )
        if self.kind == "spot":
            msg = wire.SpotPartialDepth(**common, bids=b, asks=a)
        else:
            msg = wire.DepthUpdate(**common, b=b, a=a)
        self.hub.publish(name, _encode(msg))

    def _book_ticker(self, state: MarketState) -> None:
        sid = state.market.stream_id
        name = f"{sid}@bookTicker"
        if not (self.hub.active(name) or self.hub.active("!bookTicker")):
            return
        engine = state.engine
        bid, ask = engine.best_bid(), engine.best_ask()
        top = (bid, ask, engine.level_qty(BUY, bid or 0), engine.level_qty(SELL, ask or 0))
        if self._top.get(sid) == top:
            return
        self._top[sid] = top
        msg = book_ticker(state, self.kind)
        if msg is not None:
            payload = _encode(msg)
            self.hub.publish(name, payload)
            self.hub.publish("!bookTicker", payload)

    def _kline(self, state: MarketState, interval: str) -> None:
        name = f"{state.market.stream_id}@kline_{interval}"
        if not self.hub.active(name):
            return
        now = now_ms()
        self.hub.publish(
            name,
            _encode(
                wire.KlineEvent(
                    e="kline", E=now, s=state.market.symbol, k=kline_of(state, interval, now)
                )
            ),
        )

    def _tickers(self) -> None:
        minis, fulls = [], []
        want_minis, want_fulls = self.hub.active("!miniTicker@arr"), self.hub.active("!ticker@arr")
        for sid, state in self.states.items():
            mini_name, full_name = f"{sid}@miniTicker", f"{sid}@ticker"
            if want_minis or self.hub.active(mini_name):
                mini = mini_ticker(state)
                minis.append(mini)
                self.hub.publish(mini_name, _encode(mini))
            if want_fulls or self.hub.active(full_name):
                full = ticker_24hr(state)
                fulls.append(full)
                self.hub.publish(full_name, _encode(full))
        if want_minis:
            self.hub.publish("!miniTicker@arr", _encode(minis))
        if want_fulls:
            self.hub.publish("!ticker@arr", _encode(fulls))

    def mark_price_of(self, state: MarketState) -> wire.MarkPriceUpdate:
        return mark_price(state, self.index_price.get(state.market.stream_id))

    def _mark_price(self, state: MarketState, name: str) -> None:
        if self.hub.active(name):
            self.hub.publish(name, _encode(self.mark_price_of(state)))

    def _mark_price_all(self, name: str) -> None:
        if self.hub.active(name):
            self.hub.publish(name, _encode([self.mark_price_of(s) for s in self.states.values()]))
