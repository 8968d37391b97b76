"""Seeded synthetic order flow: market makers around a random-walk fair price, and takers.

Each market has its own ``random.Random`` seeded from (seed, kind, symbol), and the flow
advances in fixed steps that do not look at the clock, so the same seed gives the same
sequence of orders, cancels, trades and book states whatever the machine's speed. User
orders (placed between steps) change what the flow's orders meet, not what it draws.

Shape of the flow, per step (``STEP_MS`` of simulated time):
- the fair price takes a log-normal step with a weak pull back towards the start price;
- makers (post-only) refresh, add and withdraw quotes laddered around fair at the market's
  level spacing, never crossing the opposite best, withdrawing stale quotes first;
- takers send market orders, leaning towards the side that brings the mid back to fair.
Every operation changes at least one level, and a step performs 3 to 9 of them, so each
market sees about 120 book changes per second at the default 50 ms step.
"""

from __future__ import annotations

import math
import random

from .engine import BUY, SELL
from .state import MarketState

__all__ = ["STEP_MS", "SyntheticFlow"]

STEP_MS = 50
MAKERS = (-1, -2, -3)  # owner ids < 0 are the simulator's own participants
TAKER = -10
MAX_QUOTES_PER_SIDE = 30  # per maker: keeps the book within a few hundred levels
MIN_QUOTES_PER_SIDE = 10  # per maker: keeps both sides of the book populated


class SyntheticFlow:
    def __init__(self, state: MarketState, seed: int) -> None:
        market = state.market
        self.state = state
        self.rng = random.Random(f"{seed}:{market.kind}:{market.symbol}")
        self.fair = market.start_price
        self._anchor = math.log(market.start_price)
        self._unit = 10**market.price_dp
        self._gap = market.level_spacing * market.tick  # price units between maker levels
        self.quotes: dict[int, tuple[list[int], list[int]]] = {m: ([], []) for m in MAKERS}
        self.steps = 0

    def seed_book(self, levels: int = 20) -> None:
        """Initial ladders: each maker quotes ``levels`` prices per side."""
        for maker in MAKERS:
            for side in (BUY, SELL):
                for _ in range(levels):
                    self._quote(maker, side)

    def step(self) -> None:
        rng = self.rng
        self.steps += 1
        log_fair = math.log(self.fair)
        drift = 0.002 * (self._anchor - log_fair)
        self.fair = math.exp(log_fair + drift + rng.gauss(0.0, self.state.market.volatility))
        for _ in range(rng.randint(3, 9)):
            r = rng.random()
            maker = rng.choice(MAKERS)
            side = BUY if rng.random() < 0.5 else SELL
            quotes = len(self._live(maker, side))
            if r < 0.40:
                self._withdraw(maker, side, stale_first=False)
                self._quote(maker, side)
            elif r < 0.75:
                if quotes >= MAX_QUOTES_PER_SIDE:
                    self._withdraw(maker, side, stale_first=True)
                else:
                    self._quote(maker, side)
            elif r < 0.87:
                self._take()
            elif quotes > MIN_QUOTES_PER_SIDE:
                self._withdraw(maker, side, stale_first=True)
            else:
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
        self.state.place(TAKER, side, self._size(-0.5))

    def _size(self, mu: float = 0.0) -> int:
        market = self.state.market
        units = market.typical_size * self.rng.lognormvariate(mu, 0.8)
        return max(market.step, int(units // market.step) * market.step)
