"""One fair-value path shared by several simulated venues, and each venue's basis from it.

``FairPath`` holds one seeded random walk per spot symbol: a log-normal step like a lone
venue's, a quarter of its size (``VOLATILITY_SCALE``: ~1 bp per 50 ms step) with a weaker
pull to the start price (``PULL``), so several venues' books can keep up with it. Whoever
owns it (``SimCluster``) steps it exactly once per simulator step, before any venue steps, so
every venue's flow reads the same fair price in that step. A venue's spot flow quotes around
``shared fair * (1 + offset)``; ``VenueFair`` draws that venue's offset and gives the flow's
arbitrageur its band: no bid above, no ask below, the venue's fair by more than ``BAND``
spacings once a step is over (so a book lagging a move cannot cross the other venues' for
long); a best price farther than ``REFILL`` of the venue's own level gaps away is requoted.

The offset (``Basis``) is, in *spacings* (``venues.py``: the listed market's distance between
maker levels, as a fraction of its price), an Ornstein-Uhlenbeck walk with a stationary
standard deviation ``basis_sd``, plus a dislocation that starts now and then (a Poisson draw
per step, mean interval ``shock_every_s``), jumps to about ``shock_size`` with a random sign,
and decays with half-life ``shock_halflife_s``: venues drift a level or so apart, now and then
one of them jumps several levels away (the consolidated book crosses), then reconverges.

Determinism: the path's random draws come from ``random.Random(f"{seed}:fair:{symbol}")``
and a venue's offset's from ``random.Random(f"{seed}:{venue}:basis:{symbol}")``, and neither
looks at the clock: the same seed gives the same fair prices and offsets, step by step.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

from .flow import STEP_MS
from .markets import SimMarket
from .venues import VenueProfile

__all__ = ["BAND", "PULL", "REFILL", "VOLATILITY_SCALE", "Basis", "FairPath", "VenueFair"]

VOLATILITY_SCALE = 0.25  # x each market's per-step volatility (a lone venue's is livelier)
PULL = 0.0002  # per step, towards the start price (time constant ~4 min)
BAND = 1.0  # spacings: a venue's arbitrageur takes bids above fair + BAND, asks below fair - BAND
REFILL = 2.0  # x the venue's own level gap: a best price farther from fair than this is requoted


def _per_step(halflife_s: float) -> float:
    """The per-step decay factor of a half-life in seconds."""
    return 0.5 ** (STEP_MS / 1000 / halflife_s) if halflife_s > 0 else 0.0


class FairPath:
    """The fair price of each spot symbol, one shared walk; ``step()`` once per step."""

    def __init__(self, seed: int, markets: Iterable[SimMarket]) -> None:
        self.seed = seed
        self.prices: dict[str, float] = {}
        self.spacing: dict[str, float] = {}  # one quote spacing, as a fraction of the price
        self._walks: dict[str, tuple[random.Random, float, float]] = {}
        for m in markets:
            if m.kind != "spot" or m.symbol in self.prices:
                continue
            self.prices[m.symbol] = m.start_price
            self.spacing[m.symbol] = m.level_spacing * m.tick / 10**m.price_dp / m.start_price
            rng = random.Random(f"{seed}:fair:{m.symbol}")
            self._walks[m.symbol] = (rng, math.log(m.start_price), m.volatility * VOLATILITY_SCALE)
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        for symbol, (rng, anchor, volatility) in self._walks.items():
            log_fair = math.log(self.prices[symbol])
            drift = PULL * (anchor - log_fair)
            self.prices[symbol] = math.exp(log_fair + drift + rng.gauss(0.0, volatility))

    def price(self, symbol: str) -> float:
        return self.prices[symbol]


class Basis:
    """A venue's offset from the shared fair value, in spacings: walk + decaying shock."""

    __slots__ = ("_decay", "_keep", "_rate", "_size", "_step_sd", "rng", "shock", "walk")

    def __init__(self, rng: random.Random, profile: VenueProfile) -> None:
        self.rng = rng
        self._keep = _per_step(profile.basis_halflife_s)
        # The step's deviation that gives the walk a stationary deviation of basis_sd.
        self._step_sd = profile.basis_sd * math.sqrt(max(0.0, 1 - self._keep**2))
        self._rate = STEP_MS / 1000 / profile.shock_every_s if profile.shock_every_s else 0.0
        self._size = profile.shock_size
        self._decay = _per_step(profile.shock_halflife_s)
        self.walk = 0.0
        self.shock = 0.0

    @property
    def value(self) -> float:
        return self.walk + self.shock

    def step(self) -> float:
        rng = self.rng
        self.walk = self.walk * self._keep + rng.gauss(0.0, self._step_sd)
        self.shock *= self._decay
        if self._rate and rng.random() < self._rate:
            sign = 1.0 if rng.random() < 0.5 else -1.0
            self.shock = sign * self._size * rng.uniform(0.6, 1.4)
        return self.walk + self.shock


class VenueFair:
    """Where one venue's spot market quotes around: ``next()`` once per step."""

    __slots__ = ("band", "basis", "path", "refill", "spacing", "symbol")

    def __init__(self, path: FairPath, market: SimMarket, venue: str, profile: VenueProfile):
        self.path = path
        self.symbol = symbol = market.symbol
        self.spacing = path.spacing[symbol]
        gap = market.level_spacing * market.tick / 10**market.price_dp  # this venue's
        self.band = BAND * self.spacing
        self.refill = max(self.band, REFILL * gap / market.start_price)
        self.basis = Basis(random.Random(f"{path.seed}:{venue}:basis:{symbol}"), profile)

    @property
    def offset(self) -> float:
        """The current offset, as a fraction of the fair price."""
        return self.basis.value * self.spacing

    def next(self) -> float:
        return self.path.price(self.symbol) * (1 + self.basis.step() * self.spacing)
