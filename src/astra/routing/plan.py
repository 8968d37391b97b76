"""The smart order router's plan: a pure function from books, fees and balances to child legs.

``plan_order(side, quantity, venues, limit_price=, arrival_mid=, max_slippage_bps=)`` splits
one taker order across venues. Decimal arithmetic throughout (inputs are Decimals; nothing is
converted to float), and no I/O: the same inputs always give the same plan.

The rules, in order:
1. Bounds. No leg trades through ``limit_price`` (BUY: no venue price above it; SELL: none
   below) nor through ``arrival_mid`` ± ``max_slippage_bps`` (BUY: price <= mid * (1 + bps /
   1e4); SELL: price >= mid * (1 - bps / 1e4)). The tighter is ``price_bound``. Bounds are on
   raw venue prices, which is what each child IOC limit order carries.
2. Water-fill. Every venue's levels on the side the order takes are walked in fee-adjusted
   order (BUY: price * (1 + taker_fee) ascending; SELL: price * (1 - taker_fee) descending);
   ties go to the venue listed first, then to book order. The walk takes whole lots, each
   ranked by its fee-adjusted average price (a lot that spans two levels of a book whose
   sizes are not on the lot ranks between them); a lot that does not fit what is left of the
   order is skipped, so the rounding dust of one venue's lot goes to the next levels on
   venues whose lot fits (see ``_walk``). A venue's take is a prefix of its book: one IOC.
3. Capacity. A venue's take is capped by its ``capacity`` (``capacity_kind`` "quote":
   price * qty * (1 + fee); "base": qty; "margin": price * qty / leverage + price * qty * fee),
   the level where it runs out taken in part, down to the lot.
4. Minimums. A venue whose take is below its ``min_quantity`` or ``min_notional`` is left out
   (the best-ranked such venue first, one per round) and the walk runs again without it, so
   its quantity is re-assigned to the next best levels elsewhere. Each round removes a venue:
   at most ``len(venues)`` rounds.
5. Never worse than one venue. Each venue alone is planned by the same rules; if one fills
   more than the routed plan, or as much for a better net price, the plan is that venue alone
   (it is then ``best_single_venue`` too). So the routed net price is never worse than the
   best single venue's for the same quantity.

Integrity rule: every leg is a multiple of its venue's lot, at or above its minimum quantity
and notional, its ``limit_price`` (its worst level, on tick, rounded toward the passive side
if a level was not) is within ``price_bound``, its cost is within its venue's capacity, and
the legs sum to at most ``requested``. Bad input raises ``ValueError`` naming the parameter.

``limited_by`` (when ``unfilled > 0``): "minimums" if the book inside the bound and the
balances would have covered the order before lots and minimums; else "balance" if the
balances alone stood in the way (the book inside the bound covers it); else "price" or
"slippage" (whichever bound is ``price_bound``; "price" on a tie) if the bound alone did;
else "liquidity" if the whole book is too thin; else "balance".

Known limit: with different lot sizes the greedy can leave dust unfilled that another mix of
lots would fill (a fine-lot venue's early slice can leave a coarse-lot venue one lot short);
rule 5 catches the cases where one venue alone fills more.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from operator import gt, lt, neg

from ._walk import _Book, _Take, alone, fill, reach

__all__ = ["Leg", "Plan", "VenueInput", "consolidated_mid", "plan_order"]

BUY, SELL = "BUY", "SELL"
_ZERO = Decimal(0)
_ONE = Decimal(1)
_BPS = Decimal(10000)
_KINDS = frozenset(("quote", "base", "margin"))


@dataclass(frozen=True, slots=True)
class VenueInput:
    venue: str
    market: str  # the member's Astra symbol, e.g. "SIM2-SPOT-BTC-USDT"
    # The side the order TAKES, best first: asks ascending for BUY, bids descending for SELL;
    # quantities in base units.
    levels: Sequence[tuple[Decimal, Decimal]]
    taker_fee: Decimal  # fraction
    tick: Decimal  # price step (a leg's limit price is on it)
    lot: Decimal  # quantity step (a leg's quantity is a multiple)
    min_quantity: Decimal = _ZERO
    min_notional: Decimal = _ZERO
    capacity: Decimal | None = None  # free balance usable there; None = uncapped
    capacity_kind: str = "quote"  # "quote" | "base" | "margin" (see the module docstring)
    leverage: Decimal = _ONE


@dataclass(frozen=True, slots=True)
class Leg:
    venue: str
    market: str
    quantity: Decimal  # multiple of the venue's lot, >= min_quantity, notional >= min_notional
    limit_price: Decimal  # the worst venue price this leg takes (on tick): the child's IOC limit
    average_price: Decimal  # expected, before fees
    notional: Decimal
    fee: Decimal  # expected taker fee (quote units)


@dataclass(frozen=True, slots=True)
class Plan:
    side: str  # "BUY" | "SELL"
    requested: Decimal
    legs: tuple[Leg, ...]  # best fee-adjusted venue first
    quantity: Decimal  # sum of legs
    unfilled: Decimal  # requested - quantity
    average_price: Decimal | None  # notional / quantity, before fees
    fees: Decimal
    net_average_price: Decimal | None  # (notional ± fees) / quantity
    arrival_mid: Decimal | None
    slippage_bps: Decimal | None  # average_price vs arrival_mid, positive = worse for the taker
    best_single_venue: str | None  # the venue that alone fills the most (then cheapest net)
    best_single_net_price: Decimal | None  # its net average price for what it alone fills
    price_bound: Decimal | None  # the tighter of limit_price and arrival_mid ± max_slippage_bps
    limited_by: str | None  # why unfilled > 0: price|slippage|balance|liquidity|minimums


def consolidated_mid(
    best_bids: Iterable[Decimal | None], best_asks: Iterable[Decimal | None]
) -> Decimal | None:
    """(highest bid + lowest ask) / 2 across venues (a crossed book included); ``None`` when
    one side is empty everywhere. ``None`` entries (a venue without that side) are skipped."""
    bid = max((b for b in best_bids if b is not None), default=None)
    ask = min((a for a in best_asks if a is not None), default=None)
    if bid is None or ask is None:
        return None
    return (bid + ask) / 2


def _number(value, name, low: str = "", venue: str | None = None) -> Decimal:
    """``value`` as a finite Decimal (an int or a numeric string is accepted too), at least
    ``low`` ("": any, ">= 0", "> 0"); the error names the parameter (built only on error:
    this runs a few times per venue per plan)."""
    if type(value) is not Decimal:
        if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
            raise ValueError(f"{_name(name, venue)} must be a Decimal, got {type(value).__name__}")
        try:
            value = Decimal(value)
        except ArithmeticError:
            raise ValueError(f"{_name(name, venue)} is not a number: {value!r}") from None
    if not value.is_finite():
        raise ValueError(f"{_name(name, venue)} must be finite, got {value}")
    if low and (value < 0 or (value == 0 and low == "> 0")):
        raise ValueError(f"{_name(name, venue)} must be {low}, got {value}")
    return value


def _name(name: str, venue: str | None) -> str:
    return name if venue is None else f"venues[{venue}].{name}"


def _levels(v: VenueInput, sign: int) -> tuple[Sequence[Decimal], Sequence[Decimal]]:
    """The levels as (prices, quantities), checked: Decimals, finite, price > 0, quantity >= 0,
    prices strictly in the order the side takes them. Checks run as C-level ``map`` passes
    (a Python loop per level would cost more than the whole walk)."""
    if not v.levels:
        return (), ()
    name = _name("levels", v.venue)
    try:
        prices, qtys = zip(*v.levels, strict=True)
        # Decimal.is_finite raises TypeError on anything but a Decimal: the type check too.
        finite = all(map(Decimal.is_finite, prices)) and all(map(Decimal.is_finite, qtys))
    except (TypeError, ValueError):
        raise ValueError(f"{name}: each level is a (price, quantity) pair of Decimals") from None
    if not finite:
        raise ValueError(f"{name}: prices and quantities must be finite")
    if not all(map(lt if sign > 0 else gt, prices, prices[1:])):
        order = "ascending (asks, for a BUY)" if sign > 0 else "descending (bids, for a SELL)"
        raise ValueError(f"{name} must be strictly {order}, best first")
    if prices[0 if sign > 0 else -1] <= 0 or min(qtys) < 0:  # sorted: one end is the lowest
        raise ValueError(f"{name}: prices must be > 0 and quantities >= 0")
    return prices, qtys


def _prepare(v: VenueInput, i: int, sign: int, bound: Decimal | None) -> _Book:
    venue = v.venue
    fee = _number(v.taker_fee, "taker_fee", ">= 0", venue)
    if fee >= 1:
        raise ValueError(f"venues[{venue}].taker_fee is a fraction below 1, got {fee}")
    _number(v.tick, "tick", "> 0", venue)
    _number(v.lot, "lot", "> 0", venue)
    _number(v.min_quantity, "min_quantity", ">= 0", venue)
    _number(v.min_notional, "min_notional", ">= 0", venue)
    if v.capacity_kind not in _KINDS:
        raise ValueError(f"venues[{venue}].capacity_kind must be quote, base or margin")
    prices, qtys = _levels(v, sign)
    n = len(prices)
    if bound is not None:  # the levels within the bound are a prefix
        n = bisect_right(prices, bound) if sign > 0 else bisect_right(prices, -bound, key=neg)
    cap = k = None
    if v.capacity is not None:
        cap = _number(v.capacity, "capacity", ">= 0", venue)
        if v.capacity_kind == "quote":
            k = _ONE + fee
        elif v.capacity_kind == "margin":  # scaled by leverage so the comparison is exact
            lev = _number(v.leverage, "leverage", "> 0", venue)
            k = _ONE + lev * fee
            cap = cap * lev
    fee_key = _ONE + fee if sign > 0 else fee - _ONE  # ascending key = best first
    return _Book(i, v, prices, qtys, n, fee_key, cap, k)


def _bound(side, limit_price, arrival_mid, max_slippage_bps):
    """(price_bound, which) — the tighter of the limit price and the slippage bound."""
    bounds = []
    if limit_price is not None:
        bounds.append((_number(limit_price, "limit_price", "> 0"),
                       "price"))
    if max_slippage_bps is not None:
        bps = _number(max_slippage_bps, "max_slippage_bps", ">= 0")
        if arrival_mid is None:
            raise ValueError("max_slippage_bps needs an arrival_mid (no consolidated mid)")
        move = bps / _BPS
        bounds.append((arrival_mid * (_ONE + move if side == BUY else _ONE - move), "slippage"))
    if not bounds:
        return None, None
    # BUY: the lower bound is tighter; SELL: the higher. "price" wins a tie (listed first).
    return (min if side == BUY else max)(bounds, key=lambda b: b[0])


def _on_tick(price: Decimal, tick: Decimal, side: str) -> Decimal:
    if not price % tick:
        return price
    rounding = ROUND_FLOOR if side == BUY else ROUND_CEILING  # toward the passive side
    return (price / tick).to_integral_value(rounding) * tick


def _net(takes: list[_Take], side: str) -> Decimal:
    """What the takes cost (BUY, notional + fees) or, negated, bring (SELL): lower is better."""
    total = _ZERO
    for t in takes:
        fee = t.notional * t.book.source.taker_fee
        total += t.notional + fee if side == BUY else fee - t.notional
    return total


def _limited_by(books, requested, which) -> str:
    def total(bounded, capped):
        return sum((reach(b, bounded, capped)[0] for b in books), _ZERO)

    if total(True, True) >= requested:
        return "minimums"
    if total(True, False) >= requested:
        return "balance"
    if which is not None and total(False, True) >= requested:
        return which
    if total(False, False) < requested:
        return "liquidity"
    return "balance"


def plan_order(
    side: str,
    quantity: Decimal,
    venues: Sequence[VenueInput],
    *,
    limit_price: Decimal | None = None,
    arrival_mid: Decimal | None = None,
    max_slippage_bps: Decimal | None = None,
) -> Plan:
    """The plan for a taker order of ``quantity`` across ``venues`` (see the module rules)."""
    if side not in (BUY, SELL):
        raise ValueError(f"side must be BUY or SELL, got {side!r}")
    quantity = _number(quantity, "quantity", "> 0")
    if arrival_mid is not None:
        arrival_mid = _number(arrival_mid, "arrival_mid", "> 0")
    bound, which = _bound(side, limit_price, arrival_mid, max_slippage_bps)
    sign = 1 if side == BUY else -1
    seen: set[str] = set()
    books = []
    for i, v in enumerate(venues):
        if v.venue in seen:
            raise ValueError(f"venues: {v.venue} is listed twice")
        seen.add(v.venue)
        books.append(_prepare(v, i, sign, bound))

    takes = fill(books, quantity)
    best_single = None  # (takes, book) of the venue that alone fills the most, then cheapest
    for b in books:
        take = alone(b, quantity)
        if take is not None and (best_single is None or _better([take], best_single[0], side)):
            best_single = ([take], b)
    if best_single is not None and _better(best_single[0], takes, side):
        takes = best_single[0]  # rule 5: routing never does worse than one venue alone
    return _result(side, quantity, takes, books, best_single, arrival_mid, bound, which)


def _better(a: list[_Take], b: list[_Take], side: str) -> bool:
    qa = sum((t.quantity for t in a), _ZERO)
    qb = sum((t.quantity for t in b), _ZERO)
    return qa > qb or (qa == qb and _net(a, side) < _net(b, side))


def _result(side, requested, takes, books, best_single, arrival_mid, bound, which) -> Plan:
    legs = []
    qty = notional = fees = _ZERO
    for t in takes:
        src = t.book.source
        fee = t.notional * src.taker_fee
        legs.append(
            Leg(
                venue=src.venue,
                market=src.market,
                quantity=t.quantity,
                limit_price=_on_tick(t.price, src.tick, side),
                average_price=t.notional / t.quantity,
                notional=t.notional,
                fee=fee,
            )
        )
        qty += t.quantity
        notional += t.notional
        fees += fee
    avg = net = slip = None
    if qty:
        avg = notional / qty
        net = (notional + fees if side == BUY else notional - fees) / qty
        if arrival_mid is not None:
            slip = (avg - arrival_mid if side == BUY else arrival_mid - avg) / arrival_mid * _BPS
    single_venue = single_net = None
    if best_single is not None:
        single_takes, b = best_single
        single_venue = b.venue
        net_total = _net(single_takes, side)
        single_net = (net_total if side == BUY else -net_total) / single_takes[0].quantity
    unfilled = requested - qty
    return Plan(
        side=side,
        requested=requested,
        legs=tuple(legs),
        quantity=qty,
        unfilled=unfilled,
        average_price=avg,
        fees=fees,
        net_average_price=net,
        arrival_mid=arrival_mid,
        slippage_bps=slip,
        best_single_venue=single_venue,
        best_single_net_price=single_net,
        price_bound=bound,
        limited_by=_limited_by(books, requested, which) if unfilled > 0 else None,
    )

