"""The OTC desk's price: a pure function from the consolidated books to a quote's quantities.

Meanings (the reference's): the client BUYS ``from_asset`` and SELLS ``to_asset``. The desk
therefore receives ``to_asset`` and must deliver ``from_asset``; its hedge converts the one
into the other along a route of hops (``find_route``), each a SMART spot market (the desk
BUYs base by walking asks, or SELLs base by walking bids) or the fixed-rate USD hop.

Rules:
1. Each market hop walks ALL members' levels of its side merged in fee-adjusted order (BUY:
   asks by price * (1 + fee) ascending; SELL: bids by price * (1 - fee) descending); ties go
   to the member listed first, then to book order. A BUY costs price * qty * (1 + fee) quote;
   a SELL yields price * qty * (1 - fee) quote. Levels are taken partially where needed.
2. Exact output (``from_amount`` f): the route is walked backwards, each hop computing how
   much of its source buys exactly its target; the first hop's source is the ``cost`` c in
   ``to_asset``; ``to_quantity = quantize_up(c * (1 + markup / 1e4))``.
3. Exact input (``to_amount`` t): the desk keeps its markup out of the input: t / (1 + markup
   / 1e4) is walked forwards; ``from_quantity`` is the result rounded DOWN (0 is refused),
   then the route is walked backwards for that ``from_quantity`` (rule 2), which gives the
   ``cost`` and the hedge legs: what the desk must do to deliver what it promised.
4. Too little depth on a hop, or no member book: ``InsufficientLiquidity`` naming the parameter
   given (``fromAmount`` | ``toAmount``), the market and how much it could do.

Exactness: inside a walk an amount is a ratio of two Decimals (numerator, denominator), carried
in a wide context, so that partial levels and the markup divide nothing until the very end;
the roundings of rule 2 and 3 are then exact integer divisions. Hence, exactly: exact output
then exact input on the result gives back at least f, and a quote's ``cost * (1 + markup)``
never exceeds what the client pays. ``cost``, hedge quantities and prices are returned as
Decimals (divided at 28 digits), unrounded: the hedger rounds them to the venues' lots.

Integrity rule: the client's side is rounded against the client (receives DOWN, pays UP), at
each asset's precision, and never better than the zero-markup price.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from itertools import pairwise

from astra.core import InsufficientLiquidity, InvalidParameter, UnsupportedPair
from astra.core._otc import ASSET_PRECISION, DEFAULT_PRECISION

from .assets import normal, plain

__all__ = [
    "HedgeLeg",
    "Hop",
    "MemberLevels",
    "PairBook",
    "Priced",
    "UsdRule",
    "find_route",
    "inventory_skew_bps",
    "price_quote",
]

BUY, SELL = "BUY", "SELL"
USD = "USD"
_ZERO = Decimal(0)
_ONE = Decimal(1)
_WIDE = 300  # digits for the ratio arithmetic: exact for any realistic book
_OUT = 28  # digits of the unrounded results (cost, hedge quantities, prices): the default

_Ratio = tuple[Decimal, Decimal]  # (numerator, denominator > 0)


@dataclass(frozen=True, slots=True)
class MemberLevels:
    venue: str
    bids: tuple[tuple[Decimal, Decimal], ...]  # (price, base qty), best first
    asks: tuple[tuple[Decimal, Decimal], ...]
    taker_fee: Decimal  # fraction, e.g. Decimal("0.0004")


@dataclass(frozen=True, slots=True)
class PairBook:
    """One SMART spot market, only its members whose book is synced."""

    symbol: str  # "SMART-SPOT-BTC-USDT"
    base: str  # normalized asset names ("BTC")
    quote: str  # "USDT"
    members: tuple[MemberLevels, ...]


@dataclass(frozen=True, slots=True)
class Hop:
    """One conversion step of the desk's hedge, from ``to_asset`` towards ``from_asset``."""

    source: str  # asset the desk gives on this hop
    target: str  # asset it gets
    symbol: str | None  # the SMART market; None for the fixed-rate USD hop
    side: str | None  # "BUY" (desk buys base: walks asks) | "SELL" (walks bids); None for fixed
    rate: Decimal | None = None  # fixed hop only: target units per source unit
    # Fixed hop only, when the configured number is source units per target unit (the hop from
    # USD to ``UsdRule.via``): that exact number, ``rate`` being its reciprocal (rounded), so
    # that pricing multiplies and divides by the configured rate and nothing else.
    rate_inverse: Decimal | None = None


@dataclass(frozen=True, slots=True)
class UsdRule:
    via: str = "USDT"  # USD is priced through this asset
    rate: Decimal | None = Decimal(1)  # USD per 1 ``via``; None: a SMART market between via and USD


@dataclass(frozen=True, slots=True)
class HedgeLeg:
    symbol: str  # SMART market
    side: str  # "BUY" | "SELL" (the desk's order on that market)
    quantity: Decimal  # base units (unrounded: the hedger rounds to lots)
    average_price: Decimal  # expected, before fees
    fees: Decimal  # expected, in the market's quote asset


@dataclass(frozen=True, slots=True)
class Priced:
    from_quantity: Decimal  # client receives (fromAsset precision; rounded DOWN when computed)
    to_quantity: Decimal  # client pays (toAsset precision; rounded UP when it was computed)
    cost: Decimal  # toAsset the hedge costs for from_quantity, before the markup (unrounded)
    markup_bps: Decimal
    hedges: tuple[HedgeLeg, ...]
    home_notional: Decimal  # the trade's size in the HOME asset


# ------------------------------------------------------------------------------ the route


def _market_hop(source: str, target: str, markets: Mapping[tuple[str, str], str]) -> Hop | None:
    symbol = markets.get((target, source))
    if symbol is not None:  # target is the base: the desk buys it with source
        return Hop(source, target, symbol, BUY)
    symbol = markets.get((source, target))
    if symbol is not None:  # source is the base: the desk sells it for target
        return Hop(source, target, symbol, SELL)
    return None


def _plain_route(source: str, target: str, markets, bridges, avoid=()) -> tuple[Hop, ...] | None:
    """Direct market, else the first bridge with markets to both (not one of ``avoid``)."""
    hop = _market_hop(source, target, markets)
    if hop is not None:
        return (hop,)
    for bridge in bridges:
        if bridge in (source, target) or bridge in avoid:
            continue
        first = _market_hop(source, bridge, markets)
        second = _market_hop(bridge, target, markets) if first is not None else None
        if second is not None:
            return (first, second)
    return None


def _usd_hop(source: str, target: str, markets, usd: UsdRule) -> Hop | None:
    """The hop between USD and ``usd.via`` (either way): fixed at the rule's rate, or the
    market between them when the rate is None."""
    if usd.rate is None:
        return _market_hop(source, target, markets)
    if usd.rate <= 0 or not usd.rate.is_finite():
        raise ValueError(f"the USD rate must be > 0, got {usd.rate}")
    if target == USD:  # via -> USD: USD per via is the configured rate
        return Hop(source, target, None, None, rate=usd.rate)
    with localcontext() as ctx:
        ctx.prec = _OUT
        return Hop(source, target, None, None, rate=_ONE / usd.rate, rate_inverse=usd.rate)


def find_route(
    from_asset: str,
    to_asset: str,
    markets: Mapping[tuple[str, str], str],
    *,
    bridges: Sequence[str] = ("USDT", "USDC"),
    usd: UsdRule = UsdRule(),  # frozen: a shared default is safe
) -> tuple[Hop, ...]:
    """The hops from ``to_asset`` (what the desk receives) to ``from_asset`` (what it
    delivers). ``markets``: (base, quote) -> SMART spot symbol. A direct market (either
    orientation) first; else through the first of ``bridges`` that has markets with both;
    else, when one side is USD, the USD hop to/from ``usd.via`` plus a route between ``via``
    and the other asset (direct or bridged). ``UnsupportedPair`` naming both assets when
    they are the same or nothing connects them."""
    pair = f"{from_asset}/{to_asset}"
    if from_asset == to_asset:
        raise UnsupportedPair(f"{pair}: the client would buy and sell the same asset",
                              parameter="toAsset")
    route = _plain_route(to_asset, from_asset, markets, bridges)
    if route is not None:
        return route
    if USD in (from_asset, to_asset):
        via = usd.via
        other = to_asset if from_asset == USD else from_asset
        if to_asset == USD:  # USD -> via -> ... -> from_asset
            hop = _usd_hop(USD, via, markets, usd)
            rest = () if other == via else _plain_route(via, other, markets, bridges, (USD,))
            if hop is not None and rest is not None:
                return (hop, *rest)
        else:  # to_asset -> ... -> via -> USD
            hop = _usd_hop(via, USD, markets, usd)
            rest = () if other == via else _plain_route(other, via, markets, bridges, (USD,))
            if hop is not None and rest is not None:
                return (*rest, hop)
    raise UnsupportedPair(
        f"{pair}: no market prices {from_asset} against {to_asset}, directly or through "
        f"{', '.join(bridges) or 'a bridge asset'}",
        parameter="fromAsset",
    )


# ------------------------------------------------------------------------- the walks


class _Side:
    """One market hop's merged levels, best first: (price, qty, fee) rows."""

    __slots__ = ("base", "hop", "levels", "quote")

    def __init__(self, hop: Hop, book: PairBook | None, parameter: str) -> None:
        self.hop = hop
        if book is None or not book.members:
            raise InsufficientLiquidity(
                f"{hop.symbol}: no member book to price on", parameter=parameter
            )
        pair = (book.quote, book.base) if hop.side == BUY else (book.base, book.quote)
        if pair != (hop.source, hop.target):
            raise ValueError(f"hop {hop.source}->{hop.target} {hop.side} does not match "
                             f"{book.symbol} ({book.base}/{book.quote})")
        self.base, self.quote = book.base, book.quote
        rows = []
        for m, member in enumerate(book.members):
            fee = member.taker_fee
            if not (fee.is_finite() and _ZERO <= fee < _ONE):
                raise ValueError(f"{book.symbol}: {member.venue} taker_fee must be in [0, 1)")
            factor = _ONE + fee if hop.side == BUY else _ONE - fee
            for i, (price, qty) in enumerate(member.asks if hop.side == BUY else member.bids):
                if not (price.is_finite() and qty.is_finite()) or price <= 0:
                    raise ValueError(f"{book.symbol}: {member.venue} has a level at {price}")
                if qty > 0:
                    key = price * factor
                    rows.append((key if hop.side == BUY else -key, m, i, price, qty, fee))
        rows.sort(key=lambda r: r[:3])
        self.levels = [(r[3], r[4], r[5]) for r in rows]

    def short(self, parameter: str, what: str) -> InsufficientLiquidity:
        return InsufficientLiquidity(f"{self.hop.symbol}: {what}", parameter=parameter)

    def depth(self) -> tuple[Decimal, Decimal]:
        """(base qty, quote with fees) of the whole side."""
        qty = sum((q for _, q, _ in self.levels), _ZERO)
        sign = 1 if self.hop.side == BUY else -1
        quote = sum((p * q * (_ONE + sign * f) for p, q, f in self.levels), _ZERO)
        return qty, quote


def _show(r: _Ratio) -> str:
    with localcontext() as ctx:
        ctx.prec = 20
        return plain(r[0] / r[1])


def _back(side: _Side, need: _Ratio, parameter: str) -> tuple[_Ratio, tuple[_Ratio, ...]]:
    """The source amount that gets exactly ``need`` of the hop's target, and the leg taken:
    (base quantity, notional, fees) as ratios."""
    n, d = need
    rem = n  # all amounts of this walk are over d until a partial SELL level divides
    if side.hop.side == BUY:  # need base; pay quote with fees
        base = notional = fees = _ZERO
        for p, q, f in side.levels:
            take = min(q * d, rem)
            base += take
            notional += p * take
            fees += p * take * f
            rem -= take
            if not rem:
                return (notional + fees, d), ((base, d), (notional, d), (fees, d))
        qty, _ = side.depth()
        raise side.short(parameter, f"the asks hold {plain(qty)} {side.base}; "
                                    f"{_show(need)} {side.base} needed")
    base = notional = fees = _ZERO  # SELL: need quote after fees; give base
    for p, q, f in side.levels:
        net = p * (_ONE - f)
        full = net * q * d
        if full < rem:
            base += q
            notional += p * q
            fees += p * q * f
            rem -= full
            continue
        # A partial level (or the last one exactly): rem / (d * net) more base.
        dd = d * net
        leg = ((base * dd + rem, dd), (notional * dd + p * rem, dd), (fees * dd + p * f * rem, dd))
        return leg[0], leg
    qty, quote = side.depth()
    raise side.short(parameter, f"the bids take {plain(qty)} {side.base} for {plain(quote)} "
                                f"{side.quote}; {_show(need)} {side.quote} needed")


def _forth(side: _Side, have: _Ratio, parameter: str) -> _Ratio:
    """What exactly ``have`` of the hop's source gets of its target."""
    n, d = have
    rem = n
    if side.hop.side == SELL:  # sell base; get quote after fees
        got = _ZERO
        for p, q, f in side.levels:
            take = min(q * d, rem)
            got += p * (_ONE - f) * take
            rem -= take
            if not rem:
                return got, d
        qty, _ = side.depth()
        raise side.short(parameter, f"the bids take {plain(qty)} {side.base}; "
                                    f"{_show(have)} {side.base} to sell")
    got = _ZERO  # BUY: spend quote with fees; get base
    for p, q, f in side.levels:
        unit = p * (_ONE + f)
        full = unit * q * d
        if full < rem:
            got += q
            rem -= full
            continue
        dd = d * unit
        return got * dd + rem, dd
    qty, quote = side.depth()
    raise side.short(parameter, f"the asks sell {plain(qty)} {side.base} for {plain(quote)} "
                                f"{side.quote}; {_show(have)} {side.quote} to spend")


def _fixed_back(hop: Hop, need: _Ratio) -> _Ratio:
    if hop.rate_inverse is not None:
        return need[0] * hop.rate_inverse, need[1]
    return need[0], need[1] * hop.rate


def _fixed_forth(hop: Hop, have: _Ratio) -> _Ratio:
    if hop.rate_inverse is not None:
        return have[0], have[1] * hop.rate_inverse
    return have[0] * hop.rate, have[1]


def _floor(r: _Ratio, dp: int) -> Decimal:
    scaled = r[0].scaleb(dp)
    return normal((scaled // r[1]).scaleb(-dp))  # // truncates: the floor, amounts are > 0


def _ceil(r: _Ratio, dp: int) -> Decimal:
    scaled = r[0].scaleb(dp)
    q = scaled // r[1]
    if q * r[1] != scaled:
        q += 1
    return normal(q.scaleb(-dp))


# ------------------------------------------------------------------------------ the quote


def _check_route(from_asset: str, to_asset: str, route: Sequence[Hop]) -> None:
    if not route or route[0].source != to_asset or route[-1].target != from_asset or any(
        a.target != b.source for a, b in pairwise(route)
    ):
        raise ValueError(f"the route does not lead from {to_asset} to {from_asset}")
    for hop in route:
        if hop.symbol is None:
            if hop.rate is None or not hop.rate.is_finite() or hop.rate <= 0:
                raise ValueError(f"fixed hop {hop.source}->{hop.target} needs a rate > 0")
        elif hop.side not in (BUY, SELL):
            raise ValueError(f"hop {hop.symbol}: side must be BUY or SELL, got {hop.side!r}")


def price_quote(
    from_asset: str,
    to_asset: str,
    route: Sequence[Hop],
    books: Mapping[str, PairBook],
    *,
    from_amount: Decimal | None = None,
    to_amount: Decimal | None = None,
    markup_bps: Decimal,
    precision: Mapping[str, int] | Callable[[str], int],
    home: str = "USDT",
    home_prices: Mapping[str, Decimal] | None = None,
) -> Priced:
    """The quote for exactly one of ``from_amount`` / ``to_amount`` (see the module rules).
    ``precision``: decimal places per asset (a mapping falls back on ``ASSET_PRECISION``);
    ``home_prices``: HOME per unit of an asset, for a route that never touches HOME."""
    if (from_amount is None) == (to_amount is None):
        raise InvalidParameter("fromAmount", "give exactly one of fromAmount and toAmount")
    if not markup_bps.is_finite() or markup_bps < 0:
        raise ValueError(f"markup_bps must be >= 0 (the caller clamps), got {markup_bps}")
    _check_route(from_asset, to_asset, route)

    def dp(asset: str) -> int:
        if callable(precision):
            return precision(asset)
        return precision.get(asset, ASSET_PRECISION.get(asset, DEFAULT_PRECISION))

    parameter = "fromAmount" if from_amount is not None else "toAmount"
    with localcontext() as ctx:
        ctx.prec = _WIDE
        sides = [
            None if hop.symbol is None else _Side(hop, books.get(hop.symbol), parameter)
            for hop in route
        ]
        factor = _ONE + markup_bps.scaleb(-4)
        if from_amount is not None:
            from_quantity = from_amount
        else:
            to_quantity = to_amount
            amount: _Ratio = (to_amount, factor)  # the markup stays out of what is converted
            for hop, side in zip(route, sides, strict=True):
                amount = _fixed_forth(hop, amount) if side is None else _forth(side, amount,
                                                                               parameter)
            from_quantity = _floor(amount, dp(from_asset))
            if not from_quantity:
                raise InvalidParameter(
                    "toAmount", f"too small: it buys less than the smallest unit of "
                                f"{from_asset} ({plain(_ONE.scaleb(-dp(from_asset)))})")
        # Backwards for from_quantity: the cost, the amount at every node, the hedge legs.
        nodes: list[_Ratio] = [(from_quantity, _ONE)]
        legs: list[tuple[Hop, tuple[_Ratio, ...]]] = []
        for hop, side in zip(reversed(route), reversed(sides), strict=True):
            if side is None:
                nodes.append(_fixed_back(hop, nodes[-1]))
            else:
                source, leg = _back(side, nodes[-1], parameter)
                nodes.append(source)
                legs.append((hop, leg))
        nodes.reverse()
        legs.reverse()
        cost = nodes[0]
        if from_amount is not None:
            to_quantity = _ceil((cost[0] * factor, cost[1]), dp(to_asset))

    with localcontext() as ctx:
        ctx.prec = _OUT
        values = [n / d for n, d in nodes]
        hedges = tuple(
            HedgeLeg(
                symbol=hop.symbol,
                side=hop.side,
                quantity=qty[0] / qty[1],
                average_price=notional[0] * qty[1] / (notional[1] * qty[0]),
                fees=fees[0] / fees[1],
            )
            for hop, (qty, notional, fees) in legs
        )
        assets = [route[0].source] + [hop.target for hop in route]
        values[0], values[-1] = to_quantity, from_quantity  # the client's side at the ends
        notional = _home_notional(assets, values, home, home_prices, from_asset, to_asset)
        return Priced(
            from_quantity=from_quantity,
            to_quantity=to_quantity,
            cost=cost[0] / cost[1],
            markup_bps=markup_bps,
            hedges=hedges,
            home_notional=notional,
        )


def _home_notional(assets, values, home, home_prices, from_asset, to_asset) -> Decimal:
    """HOME on the route (the client's quantity at an end, the walk's amount in between),
    else ``home_prices`` of fromAsset, toAsset, then any asset on the route."""
    for asset, value in zip(assets, values, strict=True):
        if asset == home:
            return value
    prices = home_prices or {}
    order = [len(assets) - 1, 0, *range(1, len(assets) - 1)]
    for i in order:
        price = prices.get(assets[i])
        if price is not None:
            return values[i] * price
    raise UnsupportedPair(
        f"{from_asset}/{to_asset}: no price in {home} to size the trade", parameter="fromAsset"
    )


# ------------------------------------------------------------------------------ the skew


def inventory_skew_bps(
    from_asset: str,
    to_asset: str,
    inventory: Mapping[str, Decimal],
    limits: Mapping[str, Decimal],
    max_skew_bps: Decimal,
    *,
    home: str = "USDT",
) -> Decimal:
    """The markup adjustment (bps) from the desk's inventory. The desk sells ``from_asset``
    and buys ``to_asset``: being long ``from_asset`` makes selling it welcome (negative
    skew), being long ``to_asset`` makes buying more of it unwelcome (positive). Each term is
    ``max_skew_bps * inventory / limit`` with the ratio clamped to [-1, 1]; an asset without
    a positive limit, or HOME, adds 0."""

    def ratio(asset: str) -> Decimal:
        limit = limits.get(asset)
        if asset == home or limit is None or limit <= 0:
            return _ZERO
        return max(-_ONE, min(_ONE, inventory.get(asset, _ZERO) / limit))

    return max_skew_bps * (ratio(to_asset) - ratio(from_asset))
