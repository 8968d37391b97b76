"""Simulated venues as data: each venue code's fees, liquidity, tick/lot sizes, latency and
basis process.

``SIM``, ``SIM2`` and ``SIM3`` have hand-written profiles (the table below); ``SIM4`` ...
``SIM16`` are derived from their index by a seeded draw, so a code always means the same
venue. ``profile_for("SIM")`` leaves every market, fee and flow parameter as the single-venue
simulator has always had them.

========  ==========  ==========  =====  ======  =======  ====================  =======
venue     spot m/t    perp m/t    size   quotes  spacing  ticks / lots          latency
========  ==========  ==========  =====  ======  =======  ====================  =======
SIM       1.0/4.0 bp  2.0/4.0 bp  1x     10-30   1x       as listed             0 ms
SIM2      1.5/5.0 bp  2.0/5.0 bp  2x     15-40   2x       as listed             1 ms
SIM3      0.0/2.5 bp  1.0/3.0 bp  0.5x   6-15    3x       BTC spot tick 10x,    3 ms
                                                          ETH spot lot 10x
========  ==========  ==========  =====  ======  =======  ====================  =======

(size: maker and taker order sizes; quotes: resting quotes per maker and side, kept within
that range; spacing: the distance between maker levels, so the spread.)

Basis (see ``fairpath.py``): a venue quotes around the shared fair value times (1 + its
offset); the offset is a mean-reverting walk plus, now and then, a dislocation that decays
away. Both are in *spacings*: one spacing is the listed (``SIM``) market's distance between
maker levels as a fraction of its start price (0.05 bp on BTC spot, 0.15 bp on ETH, 0.55 bp
on SOL), so a venue dislocates by the same number of quote levels on every symbol.

========  ========  =========  ==================  =========  =============
venue     walk sd   half-life  dislocation, mean   size       its half-life
========  ========  =========  ==================  =========  =============
SIM       0.15      20 s       every 240 s         3 spacings 1.5 s
SIM2      0.25      20 s       every 120 s         4 spacings 1.5 s
SIM3      0.35      10 s       every 60 s          5 spacings 1.5 s
========  ========  =========  ==================  =========  =============

Invariants: a profile's markets keep every listed symbol, kind and start price (the shared
fair path is keyed by symbol); a scaled tick divides the scaled minimum price (prices stay
on ``min_price + k * tick``); a scaled size is at least one lot.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from astra.core import MAX_SIM_VENUES, SIM_CODES

from .markets import SimMarket

__all__ = ["PROFILES", "VenueProfile", "profile_for", "venue_data_path"]


@dataclass(frozen=True, slots=True)
class VenueProfile:
    code: str
    spot_fees_ppm: tuple[int, int]  # (maker, taker), parts per million of the notional
    perp_fees_ppm: tuple[int, int]
    size_factor: float = 1.0  # maker and taker order sizes x this
    quotes_per_side: tuple[int, int] = (10, 30)  # per maker: kept at least, at most
    spacing_factor: float = 1.0  # distance between maker levels (so the spread) x this
    tick_factors: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (kind, symbol)
    lot_factors: Mapping[tuple[str, str], int] = field(default_factory=dict)
    latency_ms: float = 0.0  # added to each REST response
    basis_sd: float = 0.0  # stationary standard deviation of the basis walk, in spacings
    basis_halflife_s: float = 20.0  # how fast the walk reverts to zero
    shock_every_s: float = 0.0  # mean time between dislocations (0: none)
    shock_size: float = 0.0  # a dislocation's size, in spacings (drawn in [0.6, 1.4] x this)
    shock_halflife_s: float = 1.5  # how fast a dislocation decays

    def fees_ppm(self, kind: str) -> tuple[int, int]:
        return self.perp_fees_ppm if kind == "perp" else self.spot_fees_ppm

    def markets(self, markets: Iterable[SimMarket]) -> tuple[SimMarket, ...]:
        """``markets`` as this venue lists them (``SIM``'s: unchanged)."""
        return tuple(self._market(m) for m in markets)

    def _market(self, m: SimMarket) -> SimMarket:
        t = self.tick_factors.get((m.kind, m.symbol), 1)
        lot = self.lot_factors.get((m.kind, m.symbol), 1)
        if t == 1 and lot == 1 and self.spacing_factor == 1 and self.size_factor == 1:
            return m
        tick, step = m.tick * t, m.step * lot
        gap = m.level_spacing * m.tick * self.spacing_factor  # price units between levels
        size = int(m.typical_size * self.size_factor) // step * step
        return replace(
            m,
            tick=tick,
            step=step,
            min_price=-(-m.min_price // tick) * tick,
            max_price=m.max_price // tick * tick,
            max_qty=m.max_qty // step * step,
            max_market_qty=m.max_market_qty // step * step,
            level_spacing=max(1, round(gap / tick)),
            typical_size=max(step, size),
        )


PROFILES: dict[str, VenueProfile] = {
    # Today's single venue: markets, fees and flow as they have always been.
    "SIM": VenueProfile(
        "SIM", (100, 400), (200, 400),
        basis_sd=0.15, shock_every_s=240.0, shock_size=3.0,
    ),
    # Deep and wider, dearer to take from.
    "SIM2": VenueProfile(
        "SIM2", (150, 500), (200, 500),
        size_factor=2.0, quotes_per_side=(15, 40), spacing_factor=2.0, latency_ms=1.0,
        basis_sd=0.25, shock_every_s=120.0, shock_size=4.0,
    ),
    # Thin and coarse, cheap to take from, the most dislocated.
    "SIM3": VenueProfile(
        "SIM3", (0, 250), (100, 300),
        size_factor=0.5, quotes_per_side=(6, 15), spacing_factor=3.0,
        tick_factors={("spot", "BTCUSDT"): 10}, lot_factors={("spot", "ETHUSDT"): 10},
        latency_ms=3.0, basis_sd=0.35, basis_halflife_s=10.0, shock_every_s=60.0,
        shock_size=5.0,
    ),
}  # fmt: skip


def _derived(index: int) -> VenueProfile:
    """SIM4 ... SIM16: a seeded draw from the index, the same on every machine."""
    rng = random.Random(f"astra-sim-venue:{index}")
    maker = rng.choice((0, 50, 100, 150, 200))
    return VenueProfile(
        f"SIM{index}",
        (maker, maker + rng.choice((150, 250, 300, 400))),
        (maker + 50, maker + rng.choice((250, 300, 400, 500))),
        size_factor=rng.choice((0.5, 0.75, 1.0, 1.5, 2.0)),
        quotes_per_side=rng.choice(((6, 15), (10, 30), (15, 40))),
        spacing_factor=rng.choice((1.0, 2.0, 3.0)),
        latency_ms=float(rng.randint(0, 4)),
        basis_sd=rng.choice((0.15, 0.25, 0.35)),
        shock_every_s=rng.choice((60.0, 120.0, 240.0)),
        shock_size=rng.choice((3.0, 4.0, 5.0)),
    )


def profile_for(code: str) -> VenueProfile:
    """The profile of simulator venue ``code`` (``SIM``, ``SIM2`` ... ``SIM16``)."""
    code = code.upper()
    if code not in SIM_CODES:
        raise ValueError(f"{code} is not a simulator venue (SIM, SIM2 ... SIM{MAX_SIM_VENUES})")
    return PROFILES.get(code) or _derived(SIM_CODES.index(code) + 1)


def venue_data_path(data: str | None, code: str) -> str | None:
    """Where venue ``code`` keeps its trading state under ``--data FILE``: ``FILE`` for
    ``SIM`` (as a single venue always has), ``FILE.SIM2``, ``FILE.SIM3`` ... for the others."""
    if data is None or code == "SIM":
        return data
    return f"{data}.{code}"
