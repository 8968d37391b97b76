"""Perpetual positions and margin arithmetic: the constants of the margin model, a position
(signed quantity + entry cost), an account's margin figures, the order predicates
(``in_book``, ``is_reduce``) and the fill arithmetic.

Everything is an exact integer: quantities in the market's quantity units, prices in its price
units, money in ledger units (10**-8 USDT). See ``perp.py`` for the model as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from .engine import BUY
from .ledger import AMOUNT_DP
from .markets import SimMarket
from .orders import STOP_TYPES, OrderRequest, UserOrder

__all__ = [
    "BRACKETS", "DEFAULT_LEVERAGE", "FUNDING_INTERVAL_MS", "LIQUIDATION_PREFIX", "MAINT_PERMILLE",
    "MARGIN_ASSET", "MAX_LEVERAGE", "PERP_MAKER_PPM", "PERP_TAKER_PPM", "WALLET", "Figures",
    "Position", "apply_fill", "ceil_div", "in_book", "is_reduce", "max_notional", "permille",
    "units", "value_at",
]  # fmt: skip

WALLET = "perp"
MARGIN_ASSET = "USDT"
PERP_MAKER_PPM = 200  # 0.0200 %, the docs' commissionRate example
PERP_TAKER_PPM = 400  # 0.0400 %
DEFAULT_LEVERAGE = 20
MAX_LEVERAGE = 125
MAINT_PERMILLE = 25  # exchangeInfo maintMarginPercent 2.5000
FUNDING_INTERVAL_MS = 8 * 3600 * 1000
# (max initial leverage, notional floor, notional cap) in USDT; one maintenance rate for all.
BRACKETS = (
    (125, 0, 50_000), (100, 50_000, 250_000), (50, 250_000, 1_000_000),
    (20, 1_000_000, 10_000_000), (10, 10_000_000, 20_000_000), (5, 20_000_000, 50_000_000),
    (4, 50_000_000, 100_000_000), (2, 100_000_000, 200_000_000),
    (1, 200_000_000, 500_000_000),
)  # fmt: skip
LIQUIDATION_PREFIX = "autoclose-"


def max_notional(leverage: int) -> int:
    """The largest position notional (USDT) allowed at ``leverage``."""
    return max(cap for lev, _, cap in BRACKETS if lev >= leverage)


def units(market: SimMarket, notional: int) -> int:
    """Ledger units of a ``price * qty`` product (units of 10**-(price_dp+qty_dp))."""
    return notional * 10 ** (AMOUNT_DP - market.price_dp - market.qty_dp)


def value_at(market: SimMarket, amt: int, mark_e8: int) -> int:
    """Signed ledger value of ``amt`` quantity units at a price of ``mark_e8`` (exact for
    every listed market: a mid has at most price_dp + 1 decimals)."""
    return amt * mark_e8 // 10**market.qty_dp


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class Position:
    __slots__ = ("amt", "cost", "realized", "update_time")

    def __init__(self, amt: int = 0, cost: int = 0, realized: int = 0, update_time: int = 0):
        self.amt = amt  # signed quantity units
        self.cost = cost  # entry notional of |amt|, price*qty units, >= 0
        self.realized = realized  # accumulated realized PnL, ledger units
        self.update_time = update_time

    def entry(self, market: SimMarket) -> str:
        if not self.amt:
            return "0.00000000"
        value = Decimal(self.cost) / abs(self.amt) / 10**market.price_dp
        return f"{value.quantize(Decimal(1).scaleb(-8), ROUND_HALF_EVEN)}"


@dataclass(slots=True)
class Figures:
    """An account's margin figures in ledger units of ``MARGIN_ASSET``."""

    wallet: int = 0
    upnl: int = 0
    pos_im: int = 0
    order_im: int = 0
    maint: int = 0
    isolated: int = 0  # margin set aside for isolated positions (part of ``wallet``)

    @property
    def margin_balance(self) -> int:
        return self.wallet + self.upnl

    @property
    def available(self) -> int:
        return self.wallet + self.upnl - self.pos_im - self.order_im - self.isolated


def in_book(order: UserOrder) -> bool:
    """Whether an order is (or is entering) the book: not a stop still waiting."""
    return order.type not in STOP_TYPES or order.triggered


def is_reduce(o: UserOrder | OrderRequest) -> bool:
    """Whether an order (or request) may only shrink its position: ``reduceOnly``,
    ``closePosition``, or a hedge-mode closing side (SELL LONG, BUY SHORT)."""
    return (o.reduce_only or o.close_position
            or (o.position_side == "LONG" and o.side != BUY)
            or (o.position_side == "SHORT" and o.side == BUY))


def apply_fill(pos: Position, side: int, qty: int, price: int) -> int:
    """Add a fill to a position; returns the realized PnL (price*qty units)."""
    delta = qty if side == BUY else -qty
    if pos.amt == 0 or (pos.amt > 0) == (delta > 0):
        pos.amt += delta
        pos.cost += price * qty
        return 0
    size = abs(pos.amt)
    closing = min(qty, size)
    closed_cost = pos.cost if closing == size else pos.cost * closing // size
    pnl = price * closing - closed_cost if pos.amt > 0 else closed_cost - price * closing
    pos.cost -= closed_cost
    pos.amt += closing if delta > 0 else -closing
    rest = qty - closing
    if rest:  # one-way mode: the fill flips the position
        pos.amt = rest if delta > 0 else -rest
        pos.cost = price * rest
    return pnl


def permille(rate: str) -> int | None:
    """A callbackRate (percent, 0.1..5, one decimal) in tenths of a percent, or None."""
    try:
        value = Decimal(rate) * 10
    except (InvalidOperation, ValueError):
        return None
    if not value.is_finite() or value != value.to_integral_value() or not 1 <= value <= 50:
        return None
    return int(value)
