"""Replaying a recorded book on a simulated market: backtest on real liquidity
(``astra sim --replay [CODE=]DIR``).

A tape root (``astra.tape``) holds the book frames a gateway recorded. Each recorded book
market (single-venue or ``SMART-``) whose type, base and quote equal one of a venue's markets
(``SIM-SPOT-BTC-USDT`` and ``BINANCE-SPOT-BTC-USDT`` <-> spot ``BTCUSDT``; ``*-PERP-BTC-USDT``
<-> perpetual ``BTCUSDT``) is replayed there; several candidates for one market: the one of
the venue's own exchange code, else the first in sorted order.

On a replayed market the synthetic flow is off (no makers, takers, arbitrageur): a
``BookReplay`` takes its place in the venue's step loop. One participant, ``REPLAYER`` (a
negative owner id like the flow's, so it trades against the house account), holds exactly the
recorded levels as resting orders, one order per tick:

- time: record time = ``from`` + (simulated time elapsed since start x ``speed``); each sim
  step applies the rows recorded up to it (``local_ts``, the recording gateway's receive
  time), folded, then changes the book once;
- levels: a recorded price rounds to the market's tick (bids down, asks up, so a recorded
  uncrossed book stays uncrossed), the recorded quantities of the prices sharing a tick add
  up, and the sum rounds down to the lot; a tick whose rounded quantity changed gets its
  order cancelled and, if still non-zero, placed again with the new quantity (it joins the
  back of that level's queue);
- consumed liquidity: what a user order takes from a recorded level is gone until the record
  next changes that level (its quantity is then set to the recorded one again); a snapshot
  re-sets only the ticks it changes, so periodic snapshots are harmless;
- a ``resync`` row: the book stays as it is until the next snapshot (updates in between are
  ignored); a snapshot replaces the book whole;
- a level that would cross the participant's own opposite side (a crossed recorded
  ``SMART`` book) is held back until it no longer would; one that crosses a user's resting
  order trades with it, as the recorded liquidity would have;
- at ``to`` the replay ends and the last book stays as recorded last.
- a file of the record that is not the record's (damaged, not Parquet): met while replaying,
  that market's replay stops there, its book as it was (a line names the file; the venue's
  clock and other markets go on); met while building the book at ``from``, the simulator
  refuses to start.

Integrity rule: the participant changes the book only through ``MarketState.place`` /
``cancel``, like every other participant, so REST depth, diff streams (``U``/``u`` chain),
trades and user streams stay exactly as consistent as with the synthetic flow.

Frames are decoded here with a header-and-levels Struct (the simulator ranks below
``astra.history`` and must not import it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path

import msgspec

from astra.core import SIM_CODES, AstraError, parse_market
from astra.tape import BOOK, format_time, iter_batches, parse_time, recorded

from .engine import BUY, SELL
from .flow import STEP_MS
from .markets import DEFAULT_MARKETS, SimMarket
from .state import MarketState
from .venues import profile_for

__all__ = [
    "REPLAYER", "BookReplay", "ReplayPlan", "ReplaySource", "parse_replay_options",
    "plan_replays", "plan_venue",
]  # fmt: skip

REPLAYER = -20  # owner id of the recorded liquidity (< 0: the simulator's own, as the flow's)
MAX_SPEED = 1_000_000.0
_TYPES = {"spot": "SPOT", "perp": "PERP"}


@dataclass(frozen=True, slots=True)
class ReplaySource:
    """What one venue replays: a tape root and the range (µs; None: the record's start /
    end) at ``speed`` times the simulator's clock."""

    root: Path
    start_us: int | None = None
    end_us: int | None = None
    speed: float = 1.0


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """One simulated market (``kind``, venue ``symbol``) following ``recorded``."""

    kind: str
    symbol: str
    recorded: str
    root: Path
    start_us: int
    end_us: int
    speed: float

    def describe(self) -> str:
        return (f"{self.kind} {self.symbol} follows {self.recorded}, "
                f"{format_time(self.start_us)} to {format_time(self.end_us)}, speed {self.speed:g}")


# -- options ---------------------------------------------------------------------------------
def _split_code(text: str, option: str) -> tuple[str | None, str]:
    """``CODE=VALUE`` -> (CODE, VALUE) when CODE is a simulator venue; else (None, text)."""
    head, sep, rest = str(text).partition("=")
    if sep and head.strip().upper() in SIM_CODES:
        if not rest.strip():
            raise ValueError(f"{option} {text!r}: nothing after '='")
        return head.strip().upper(), rest.strip()
    if sep and head.strip().upper().startswith("SIM"):
        raise ValueError(f"{option} {text!r}: {head.strip()} is not a simulator venue "
                         f"(SIM, SIM2 ... {SIM_CODES[-1]})")
    return None, str(text).strip()


def _time(text: str, option: str) -> int:
    try:
        return parse_time(text, option)
    except AstraError as exc:
        raise ValueError(str(exc)) from None  # "invalid parameter '--replay-from': ..."


def _speed(text: str | float) -> float:
    try:
        speed = float(text)
    except (TypeError, ValueError):
        speed = math.nan
    if not (math.isfinite(speed) and 0 < speed <= MAX_SPEED):
        raise ValueError(f"--replay-speed: expected a number above 0 (at most {MAX_SPEED:g}), "
                         f"not {str(text)[:40]!r}")
    return speed


def _per_venue(values: Sequence[str], option: str, venues: Iterable[str],
               convert: Callable[[str], object]) -> dict[str, object]:
    """``[CODE=]VALUE`` options: a bare value applies to every venue, ``CODE=`` to one."""
    venues = list(venues)
    out: dict[str, object] = {}
    for text in values:
        code, value = _split_code(text, option)
        if code is not None and code not in venues:
            raise ValueError(f"{option} {text!r}: venue {code} replays nothing (--replay "
                             f"names {', '.join(venues)})")
        for c in [code] if code else venues:
            out[c] = convert(value)
    return out


def parse_replay_options(
    dirs: Sequence[str], starts: Sequence[str] = (), ends: Sequence[str] = (),
    speeds: Sequence[str] = (), venues: int = 1,
) -> dict[str, ReplaySource]:
    """``--replay [CODE=]DIR`` (no CODE: ``SIM``) with ``--replay-from/-to/-speed
    [CODE=]VALUE``, as venue code -> ``ReplaySource``. ``ValueError`` with a message naming
    the option on anything wrong: a missing directory, a venue beyond ``venues``, a malformed
    time or speed, ``to`` before ``from``."""
    if not dirs:
        if starts or ends or speeds:
            raise ValueError("--replay-from, --replay-to and --replay-speed need --replay DIR")
        return {}
    roots: dict[str, Path] = {}
    for text in dirs:
        code, value = _split_code(text, "--replay")
        code = code or "SIM"
        if code in roots:
            raise ValueError(f"--replay: venue {code} is given two directories")
        if SIM_CODES.index(code) >= venues:
            raise ValueError(f"--replay {text!r}: venue {code} is not run (--venues {venues})")
        root = Path(value).expanduser()
        if not root.is_dir():
            raise ValueError(f"--replay {text!r}: no such directory: {root}")
        roots[code] = root
    start = _per_venue(starts, "--replay-from", roots, lambda t: _time(t, "--replay-from"))
    end = _per_venue(ends, "--replay-to", roots, lambda t: _time(t, "--replay-to"))
    speed = _per_venue(speeds, "--replay-speed", roots, _speed)
    out = {}
    for code, root in roots.items():
        lo, hi = start.get(code), end.get(code)
        if lo is not None and hi is not None and hi < lo:
            raise ValueError(f"--replay-to {format_time(hi)} is before --replay-from "
                             f"{format_time(lo)} (venue {code})")
        out[code] = ReplaySource(root, lo, hi, speed.get(code, 1.0))
    return out


def _matches(recorded_market: str, market: SimMarket) -> bool:
    try:
        sym = parse_market(recorded_market)
    except AstraError:
        return False
    return (sym.asset_type.value == _TYPES.get(market.kind) and sym.base == market.base
            and sym.quote == market.quote and sym.expiry is None and sym.option_type is None
            and sym.disambiguator != "COINM")


def plan_venue(code: str, markets: Iterable[SimMarket], source: ReplaySource,
               say: Callable[[str], None] | None = None) -> list[ReplayPlan]:
    """The markets of venue ``code`` that follow a book recorded in ``source.root``;
    ``ValueError`` when none does (listing what the directory holds)."""
    books = {m: files for (m, kind), files in recorded(source.root).items() if kind == BOOK}
    plans = []
    for market in markets:
        candidates = []
        for name in sorted(books):
            files = books[name]
            first, last = files[0].first, max(f.last for f in files)
            lo = source.start_us if source.start_us is not None else first
            hi = source.end_us if source.end_us is not None else last
            if _matches(name, market) and lo <= last and hi >= first:
                candidates.append((name.split("-", 1)[0] != code, name, lo, hi))
        if not candidates:
            continue
        candidates.sort()
        _, name, lo, hi = candidates[0]
        if len(candidates) > 1 and say is not None:
            others = ", ".join(c[1] for c in candidates[1:])
            say(f"venue {code}: {market.kind} {market.symbol} follows {name} (also recorded: "
                f"{others})")
        plans.append(ReplayPlan(market.kind, market.symbol, name, source.root, lo, hi,
                                source.speed))
    if not plans:
        held = ", ".join(sorted(books)) or "no recorded book"
        wanted = ", ".join(f"{code}-{_TYPES[m.kind]}-{m.base}-{m.quote}" for m in markets)
        span = ""
        if source.start_us is not None or source.end_us is not None:
            span = " in the range asked"
        raise ValueError(f"--replay {source.root}: nothing to replay on venue {code}{span}: "
                         f"the directory holds {held}; the venue lists {wanted}")
    return plans


def plan_replays(sources: Mapping[str, ReplaySource],
                 markets: Iterable[SimMarket] = DEFAULT_MARKETS,
                 say: Callable[[str], None] | None = None) -> dict[str, list[ReplayPlan]]:
    """``plan_venue`` for every venue of ``sources`` (each with its profile's markets)."""
    markets = tuple(markets)
    return {code: plan_venue(code, profile_for(code).markets(markets), source, say)
            for code, source in sources.items()}


# -- frames ----------------------------------------------------------------------------------
class _Level(msgspec.Struct, gc=False):
    price: float
    quantity: float  # base units; 0 deletes the level


class _Frame(msgspec.Struct, gc=False):
    """The levels of a ``BookUpdate`` or ``ConsolidatedUpdate`` (its ``venues`` ignored)."""

    bids: list[_Level] = []
    asks: list[_Level] = []


_decode = msgspec.json.Decoder(_Frame).decode


def _rows(plan: ReplayPlan, start: int, end: int) -> Iterator[tuple[int, str, bytes]]:
    for batch in iter_batches(plan.root, plan.recorded, BOOK, start, end, ["type", "frame"]):
        yield from zip(batch.column("local_ts").to_pylist(), batch.column("type").to_pylist(),
                       batch.column("frame").to_pylist(), strict=True)


def _last_snapshot(plan: ReplayPlan, at: int) -> int | None:
    """Local time of the last snapshot at or before ``at`` (a pass over two small columns)."""
    last = None
    for batch in iter_batches(plan.root, plan.recorded, BOOK, None, at, ["type"]):
        for ts, kind in zip(batch.column("local_ts").to_pylist(),
                            batch.column("type").to_pylist(), strict=True):
            if kind == "snapshot":
                last = ts
    return last


class BookReplay:
    """A replayed market's participant, stepped in the flow's place (``seed_book``, ``step``,
    ``index``, ``state``, like ``SyntheticFlow``)."""

    def __init__(self, state: MarketState, plan: ReplayPlan, *, venue: str = "SIM",
                 say: Callable[[str], None] | None = None) -> None:
        self.state = state
        self.plan = plan
        self.venue = venue
        self.say = say or (lambda text: print(text, flush=True))
        market = state.market
        self.index = market.start_price
        self.steps = 0
        self.ended = False
        self.record_us = plan.start_us  # how far the record has been applied
        self.rows_applied = 0
        self._unit = Decimal(10) ** market.price_dp
        self._lot = Decimal(10) ** market.qty_dp
        self._ticks: dict[float, tuple[int, int]] = {}  # price -> (bid tick, ask tick)
        # Recorded levels, by tick: side -> tick -> {recorded price: quantity}.
        self._book: tuple[dict[int, dict[float, float]], ...] = ({}, {})
        self._posted: tuple[dict[int, int], ...] = ({}, {})  # side -> tick -> units set
        self._orders: tuple[dict[int, int], ...] = ({}, {})  # side -> tick -> order id
        self._dirty: tuple[set[int], set[int]] = (set(), set())
        self._synced = False
        self._rows: Iterator[tuple[int, str, bytes]] | None = None
        self._next: tuple[int, str, bytes] | None = None

    # -- the flow's interface ------------------------------------------------------------------
    def seed_book(self, levels: int = 0) -> None:
        """The book as recorded at ``from``: the last snapshot at or before it, then the
        updates after it up to ``from``."""
        plan = self.plan
        try:
            snap = _last_snapshot(plan, plan.start_us)
        except AstraError as exc:  # a damaged record file: refused at start (astra sim: ...)
            raise ValueError(f"--replay {plan.root}: {exc}") from None
        self._rows = _rows(plan, plan.start_us if snap is None else snap, plan.end_us)
        self._advance(plan.start_us)

    def step(self) -> None:
        self.steps += 1
        if self.ended:
            return
        plan = self.plan
        target = plan.start_us + int(self.steps * STEP_MS * 1000 * plan.speed)
        self._advance(min(target, plan.end_us))
        if target >= plan.end_us and self._peek() is None:
            self.ended = True
            self._rows = None
            self.say(f"replay of {plan.recorded} on {self.venue} ended at "
                     f"{format_time(plan.end_us)}; its book stays as recorded last")

    # -- reading the record ----------------------------------------------------------------------
    def _peek(self) -> tuple[int, str, bytes] | None:
        if self._next is None and self._rows is not None:
            try:
                self._next = next(self._rows, None)
            except AstraError as exc:  # a damaged record file: this market stops, not the venue
                self._rows, self._next, self.ended = None, None, True
                self.say(f"replay of {self.plan.recorded} on {self.venue} stopped at "
                         f"{format_time(self.record_us)}: {exc}; its book stays as it was")
            if self._next is None:
                self._rows = None
        return self._next

    def _advance(self, until: int) -> None:
        while (row := self._peek()) is not None and row[0] <= until:
            self._next = None
            self._apply_row(*row)
        self.record_us = max(self.record_us, until)
        self._sync_orders()
        engine = self.state.engine
        bid, ask = engine.best_bid(), engine.best_ask()
        if bid is not None and ask is not None:  # the index a perpetual's feeds read
            self.index = (bid + ask) / 2 / 10**self.state.market.price_dp

    def _apply_row(self, local_ts: int, kind: str, frame: bytes) -> None:
        self.rows_applied += 1
        if kind == "resync":
            self._synced = False  # keep the book as it is until the next snapshot
            return
        if kind == "snapshot":
            for side in (BUY, SELL):
                self._dirty[side].update(self._book[side])
                self._book[side].clear()
            self._synced = True
        elif kind != "update" or not self._synced:
            return
        try:
            levels = _decode(frame)
        except msgspec.DecodeError:
            return  # not a book frame: nothing to apply
        for side, rows in ((BUY, levels.bids), (SELL, levels.asks)):
            book, dirty = self._book[side], self._dirty[side]
            for level in rows:
                tick = self._tick(level.price, side)
                if tick is None:
                    continue
                at = book.get(tick)
                if level.quantity > 0:
                    if at is None:
                        at = book[tick] = {}
                    at[level.price] = level.quantity
                elif at is not None:
                    at.pop(level.price, None)
                    if not at:
                        del book[tick]
                dirty.add(tick)

    def _tick(self, price: float, side: int) -> int | None:
        ticks = self._ticks.get(price)
        if ticks is None:
            if not (math.isfinite(price) and price > 0):
                return None
            m = self.state.market
            units = Decimal(repr(price)) * self._unit / m.tick
            ticks = (int(units.to_integral_value(ROUND_FLOOR)) * m.tick,
                     int(units.to_integral_value(ROUND_CEILING)) * m.tick)
            if len(self._ticks) > 200_000:  # a long record: keep the cache bounded
                self._ticks.clear()
            self._ticks[price] = ticks
        tick = ticks[0] if side == BUY else ticks[1]
        m = self.state.market
        return tick if m.tick <= tick <= max(m.max_price, m.tick) else None

    def _units(self, side: int, tick: int) -> int:
        at = self._book[side].get(tick)
        if not at:
            return 0
        total = sum((Decimal(repr(q)) for q in at.values()), Decimal(0)) * self._lot
        step = self.state.market.step
        return int(total.to_integral_value(ROUND_FLOOR)) // step * step

    # -- the book ------------------------------------------------------------------------------
    def _sync_orders(self) -> None:
        """Set the participant's order of every changed tick to the recorded quantity:
        cancels first (both sides), then placements, so an uncrossed record never meets its
        own stale levels."""
        state, orders = self.state, self.state.engine.orders
        todo: list[tuple[int, int, int]] = []
        for side in (BUY, SELL):
            posted, mine, dirty = self._posted[side], self._orders[side], self._dirty[side]
            for tick in dirty:
                units = self._units(side, tick)
                if units == posted.get(tick, 0):
                    continue  # unchanged (what users took of it stays taken)
                oid = mine.pop(tick, None)
                if oid is not None and oid in orders:
                    state.cancel(oid)
                posted.pop(tick, None)
                if units:
                    todo.append((side, tick, units))
            dirty.clear()
        if not todo:
            return
        best_bid = max(self._live(BUY), default=None)
        best_ask = min(self._live(SELL), default=None)
        todo.sort()  # a deterministic order (it matters only in a crossed record)
        for side, tick, units in todo:
            if side == BUY and best_ask is not None and tick >= best_ask:
                self._dirty[side].add(tick)  # held back: crosses our own ask; retried
                continue
            if side == SELL and best_bid is not None and tick <= best_bid:
                self._dirty[side].add(tick)
                continue
            order, _ = state.place(REPLAYER, side, units, tick)
            self._posted[side][tick] = units
            if order.id in orders:
                self._orders[side][tick] = order.id
                if side == BUY:
                    best_bid = tick if best_bid is None else max(best_bid, tick)
                else:
                    best_ask = tick if best_ask is None else min(best_ask, tick)

    def _live(self, side: int) -> list[int]:
        orders = self.state.engine.orders
        return [tick for tick, oid in self._orders[side].items() if oid in orders]

