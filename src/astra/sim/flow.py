"""Seeded synthetic order flow: market makers around a random-walk fair price, and takers.

Each market has its own ``random.Random`` seeded from (seed, kind, symbol) on venue ``SIM``
and (seed, venue, kind, symbol) on ``SIM2``, ``SIM3``..., and the flow advances in fixed steps
that do not look at the clock, so the same seed gives the same sequence of orders, cancels,
trades and book states whatever the machine's speed. User orders (placed between steps)
change what the flow's orders meet, not what it draws.

Shape of the flow, per step (``STEP_MS`` of simulated time):
- a spot market's fair price takes a log-normal step with a weak pull back towards the start
  price; or, on a venue of several (``fairpath.py``), is the shared fair path's price times
  (1 + the venue's basis), read from ``fair`` (its draws do not come from this flow's rng);
- a perpetual follows its spot market (``reference``, stepped first): its index is the spot
  mid, and its fair price is the index times (1 + basis), the basis a small mean-reverting
  walk held within ``MAX_BASIS``;
- makers (post-only) refresh, add and withdraw quotes laddered around fair at the market's
  level spacing, never crossing the opposite best, withdrawing stale quotes first;
- takers send market orders with price protection (IOC limits ``TAKER_BAND`` beyond fair, as
  venues protect their own market orders), leaning towards the side that brings the mid back
  to fair: a side thinned by takers is never swept down to a far-away resting (user) order;
- on a perpetual, an arbitrageur then takes every bid above index * (1 + ``ARB_BAND``) and
  every ask below index * (1 - ``ARB_BAND``) (IOC limit orders at those prices), so the
  perpetual's best prices never stray further from the spot price than that, whatever the
  takers, makers or users did; a spot market of a venue of several does the same around its
  own fair price with the band its ``fair`` source gives (``band``: one quote spacing), so
  the venues' books stay near the shared fair path and near each other.
Every operation changes at least one level, and a step performs 3 to 9 of them, so each
market sees about 120 book changes per second at the default 50 ms step.

Invariant (after every step of a perpetual with a two-sided spot book): best bid <=
index * (1 + ARB_BAND) and best ask >= index * (1 - ARB_BAND), to the tick; with
|basis| <= MAX_BASIS < ARB_BAND the makers quote inside that band, and a side left beyond it
(emptied by a large order) is requoted at once. Likewise for a spot market with a ``fair``
source: best bid <= fair * (1 + band) and best ask >= fair * (1 - band), to the tick.
"""

from __future__ import annotations

import math
import random
from typing import Protocol

from .engine import BUY, SELL
from .state import MarketState

__all__ = ["ARB_BAND", "MAX_BASIS", "STEP_MS", "TAKER_BAND", "FairSource", "SyntheticFlow"]

STEP_MS = 50
MAKERS = (-1, -2, -3)  # owner ids < 0 are the simulator's own participants
TAKER = -10
ARBITRAGEUR = -11  # keeps a perpetual's book within ARB_BAND of its spot market
MAX_QUOTES_PER_SIDE = 30  # per maker: keeps the book within a few hundred levels
MIN_QUOTES_PER_SIDE = 10  # per maker: keeps both sides of the book populated
# Perpetual vs spot, as fractions of the index. Real venues' basis is typically within
# 0.05-0.1 %; the basis walk reverts with a time constant of ~10 s (1 / BASIS_PULL steps).
MAX_BASIS = 0.0003
BASIS_PULL = 0.005
BASIS_STEP = 0.00002  # per-step standard deviation of the basis (stationary sd ~0.02 %)
ARB_BAND = 0.0005
TAKER_BAND = 0.01  # a taker's worst price, as a fraction of fair (1 %): a venue's price protection


class FairSource(Protocol):
    """A spot market's fair price from outside its flow (``fairpath.VenueFair``), and the
    band (a fraction of it) its arbitrageur keeps the book within."""

    band: float
    refill: float  # a best price farther than this from fair is requoted

    def next(self) -> float: ...


class SyntheticFlow:
    def __init__(
        self,
        state: MarketState,
        seed: int,
        reference: MarketState | None = None,
        *,
        venue: str = "SIM",
        fair: FairSource | None = None,
        quotes_per_side: tuple[int, int] = (MIN_QUOTES_PER_SIDE, MAX_QUOTES_PER_SIDE),
    ) -> None:
        market = state.market
        self.state = state
        venue_key = "" if venue == "SIM" else f"{venue}:"  # SIM's flow as it always was
        self.rng = random.Random(f"{seed}:{venue_key}{market.kind}:{market.symbol}")
        self.fair = market.start_price
        self.fair_source = fair  # None: the flow's own walk (a lone venue)
        # The arbitrageur's band around the index: a perpetual's, or a shared-path spot's.
        self.band = ARB_BAND if reference is not None else fair.band if fair else None
        self.refill_band = ARB_BAND if reference is not None else fair.refill if fair else None
        self.min_quotes, self.max_quotes = quotes_per_side
        # A perpetual's spot market: its mid is the index the perpetual follows.
        self.reference = reference
        self.index = market.start_price
        self.basis = 0.0
        self._anchor = math.log(market.start_price)
        self._unit = 10**market.price_dp
        self._gap = market.level_spacing * market.tick  # price units between maker levels
        self.quotes: dict[int, tuple[list[int], list[int]]] = {m: ([], []) for m in MAKERS}
        self.steps = 0

    def seed_book(self, levels: int = 20) -> None:
        """Initial ladders: each maker quotes ``levels`` prices per side (at most its
        maximum)."""
        levels = min(levels, self.max_quotes)
        for maker in MAKERS:
            for side in (BUY, SELL):
                for _ in range(levels):
                    self._quote(maker, side)

    def step(self) -> None:
        rng = self.rng
        self.steps += 1
        if self.fair_source is not None:
            self.fair = self.index = self.fair_source.next()
        elif self.reference is None:
            log_fair = math.log(self.fair)
            drift = 0.002 * (self._anchor - log_fair)
            self.fair = math.exp(log_fair + drift + rng.gauss(0.0, self.state.market.volatility))
            self.index = self.fair
        else:
            self._follow_reference()
        for _ in range(rng.randint(3, 9)):
            r = rng.random()
            maker = rng.choice(MAKERS)
            side = BUY if rng.random() < 0.5 else SELL
            quotes = len(self._live(maker, side))
            if r < 0.40:
                self._withdraw(maker, side, stale_first=False)
                self._quote(maker, side)
            elif r < 0.75:
                if quotes >= self.max_quotes:
                    self._withdraw(maker, side, stale_first=True)
                else:
                    self._quote(maker, side)
            elif r < 0.87:
                self._take()
            elif quotes > self.min_quotes:
                self._withdraw(maker, side, stale_first=True)
            else:
                self._quote(maker, side)
        if self.band is not None:
            self._arbitrage()
        for side in (BUY, SELL):  # a side emptied by takers or the arbitrageur is refilled
            self._refill(side)

    # -- perpetual vs spot --------------------------------------------------------------------
    def _follow_reference(self) -> None:
        """Index = the spot mid (kept while a spot side is empty); fair = index * (1 + basis)."""
        ref = self.reference.engine
        bid, ask = ref.best_bid(), ref.best_ask()
        if bid is not None and ask is not None:
            self.index = (bid + ask) / 2 / 10**self.reference.market.price_dp
        basis = self.basis * (1 - BASIS_PULL) + self.rng.gauss(0.0, BASIS_STEP)
        self.basis = max(-MAX_BASIS, min(MAX_BASIS, basis))
        self.fair = self.index * (1 + self.basis)

    def _arbitrage(self) -> None:
        """Take the bids above, and asks below, the index's band (IOC limits): a perpetual's
        index is its spot mid, a shared-path spot market's its own fair price."""
        market = self.state.market
        engine = self.state.engine
        high = self.index * (1 + self.band) * self._unit
        low = self.index * (1 - self.band) * self._unit
        bid = engine.best_bid()
        if bid is not None and bid > high:
            limit = -(-math.ceil(high) // market.tick) * market.tick  # first tick >= high
            self.state.place(ARBITRAGEUR, SELL, market.max_qty, limit, ioc=True)
        ask = engine.best_ask()
        if ask is not None and ask < low:
            limit = int(low) // market.tick * market.tick  # last tick <= low
            self.state.place(ARBITRAGEUR, BUY, market.max_qty, max(limit, market.tick), ioc=True)

    def _refill(self, side: int) -> None:
        """An empty side gets a quote from every maker (around fair), so the book is two-sided
        after every step; on a perpetual (or a shared-path spot market), so does a side whose
        best price has fallen out of the (refill) band away from the index (a hole a large
        order left), so the spread, and the mid, stay within the band."""
        engine = self.state.engine
        best = engine.best_bid() if side == BUY else engine.best_ask()
        if best is not None and self.refill_band is not None:
            band = self.refill_band
            edge = self.index * (1 - band if side == BUY else 1 + band) * self._unit
            if (best < edge) if side == BUY else (best > edge):
                best = None
        if best is None:
            for maker in MAKERS:
                self._quote(maker, side)

    # -- participants --------------------------------------------------------------------------
    def _live(self, maker: int, side: int) -> list[int]:
        """The maker's resting order ids on ``side`` (forgetting those filled meanwhile)."""
        ids = self.quotes[maker][side]
        orders = self.state.engine.orders
        ids[:] = [oid for oid in ids if oid in orders]
        return ids

    def _quote(self, maker: int, side: int) -> None:
        market = self.state.market
        engine = self.state.engine
        rng = self.rng
        distance = 1 + int(rng.expovariate(1 / 6))
        fair_units = self.fair * self._unit
        if side == BUY:
            price = int(fair_units // self._gap - distance + 1) * self._gap
            best_ask = engine.best_ask()
            if best_ask is not None and price >= best_ask:
                price = best_ask - market.tick
        else:
            price = int(-(-fair_units // self._gap) + distance - 1) * self._gap
            best_bid = engine.best_bid()
            if best_bid is not None and price <= best_bid:
                price = best_bid + market.tick
        price = max(price, market.tick)
        qty = self._size()
        order, _ = self.state.place(maker, side, qty, price, post_only=True)
        if order.id in engine.orders:
            self.quotes[maker][side].append(order.id)

    def _withdraw(self, maker: int, side: int, *, stale_first: bool) -> None:
        ids = self._live(maker, side)
        if not ids:
            self._quote(maker, side)
            return
        orders = self.state.engine.orders
        fair_units = self.fair * self._unit
        if stale_first:
            # The quote farthest from fair on the wrong side, else the farthest overall.
            def badness(oid: int) -> float:
                p = orders[oid].price
                wrong = (p > fair_units) if side == BUY else (p < fair_units)
                return abs(p - fair_units) + (1e18 if wrong else 0.0)

            victim = max(ids, key=badness)
        else:
            victim = ids[self.rng.randrange(len(ids))]
        ids.remove(victim)
        self.state.cancel(victim)

    def _take(self) -> None:
        engine = self.state.engine
        bid, ask = engine.best_bid(), engine.best_ask()
        lean = 0.0
        if bid is not None and ask is not None:
            mid = (bid + ask) / 2
            lean = max(-0.3, min(0.3, (self.fair * self._unit - mid) / (self._gap * 20)))
        side = BUY if self.rng.random() < 0.5 + lean else SELL
        if (side == BUY and ask is None) or (side == SELL and bid is None):
            return self._quote(MAKERS[0], SELL if side == BUY else BUY)
        market = self.state.market
        if side == BUY:  # the last tick at or below fair * (1 + band)
            limit = int(self.fair * (1 + TAKER_BAND) * self._unit) // market.tick * market.tick
        else:  # the first tick at or above fair * (1 - band)
            low = math.ceil(self.fair * (1 - TAKER_BAND) * self._unit)
            limit = -(-low // market.tick) * market.tick
        self.state.place(TAKER, side, self._size(-0.5), max(limit, market.tick), ioc=True)

    def _size(self, mu: float = 0.0) -> int:
        market = self.state.market
        units = market.typical_size * self.rng.lognormvariate(mu, 0.8)
        return max(market.step, int(units // market.step) * market.step)
