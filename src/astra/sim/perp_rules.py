"""Order-entry rules of the perpetual side: position side, ``reduceOnly`` / ``closePosition``,
trailing stops, and what a conditional order becomes when it fires.

Reduce rules: ``reduceOnly`` (one-way only) and hedge-mode closing orders (SELL LONG,
BUY SHORT) may only shrink a position: at placement the order plus the other resting
reducing orders of that position must fit in it (else -2022), and after every batch of fills
resting reducing orders that no longer fit expire, newest first (``excess_reduce``), so they
never flip it.

Triggers: a reducing stop that fires is cut to what its position can still close (net of the
other resting reducing orders; a ``closePosition`` stop takes all of it) and expires if that is
nothing; an opening stop is margin-checked again and expires if the margin is gone.
``TRAILING_STOP_MARKET`` activates at ``activationPrice`` (or at once) and fires when the price
retraces ``callbackRate`` % (0.1..5) from the extreme seen since.

Nothing here moves money, touches the book or finishes an order: these functions decide,
``perp.PerpTrading`` cancels and finishes. The trading side is passed in as a
``perp_side.PerpSide``: ``perp`` imports this module, never the reverse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .engine import BUY
from .orders import STOP_TYPES, OrderError, OrderRequest, UserOrder
from .perp_figures import check_margin
from .perp_positions import in_book, is_reduce, permille
from .state import MarketState

if TYPE_CHECKING:
    from .perp_side import PerpSide

__all__ = ["check_trailing", "closable", "excess_reduce", "fit_triggered", "pre_check",
           "resting_reduce", "trailing_triggered"]


def closable(trading: PerpSide, account: int, symbol: str, side: int, ps: str) -> int:
    """How much of the position an order of ``side`` on ``ps`` can close."""
    amt = trading.amount(account, symbol, ps)
    if side == BUY:
        return -amt if amt < 0 and ps != "LONG" else 0
    return amt if amt > 0 and ps != "SHORT" else 0


def resting_reduce(trading: PerpSide, account: int, symbol: str, side: int, ps: str,
                   exclude: UserOrder | None = None) -> list[UserOrder]:
    """The reducing orders of one position side in (or entering) the book, oldest first."""
    return sorted(
        (o for o in trading.open.get((account, symbol), {}).values()
         if o is not exclude and o.side == side and o.position_side == ps
         and is_reduce(o) and in_book(o)),
        key=lambda o: o.id,
    )


def excess_reduce(trading: PerpSide, account: int, symbol: str) -> list[UserOrder]:
    """The resting reducing orders that no longer fit in their position, newest first within
    each position side (they are to expire)."""
    out = []
    for ps in ("BOTH", "LONG", "SHORT"):
        for side in (0, 1):
            orders = resting_reduce(trading, account, symbol, side, ps)
            if not orders:
                continue
            room = closable(trading, account, symbol, side, ps)
            total = sum(o.remaining for o in orders)
            for o in reversed(orders):
                if total <= room:
                    break
                total -= o.remaining
                out.append(o)
    return out


def pre_check(trading: PerpSide, account: int, state: MarketState, req: OrderRequest) -> None:
    """The perpetual rules of a new order before it exists (``OrderManager._pre_check``)."""
    dual = account in trading.dual
    if (req.position_side == "BOTH") == dual:
        raise OrderError(-4061, "Order's position side does not match user's setting.")
    if req.reduce_only and dual:
        raise OrderError(-1106, "Parameter 'reduceOnly' sent when not required.")
    if req.close_position:
        if req.type not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
            raise OrderError(-1106, "Parameter 'closePosition' sent when not required.")
        if req.qty is not None:
            raise OrderError(-4137, "Quantity must be zero with closePosition equals true")
        if req.reduce_only:
            raise OrderError(-4138, "Reduce only must be true with closePosition equals true")
        if dual and (req.position_side == "LONG") == (req.side == BUY):
            raise OrderError(-2022, "ReduceOnly Order is rejected.")
    elif req.qty is None:
        raise OrderError(-1102, "Mandatory parameter 'quantity' was not sent, was empty/null, "
                                "or malformed.")
    if req.type == "TRAILING_STOP_MARKET":
        check_trailing(state, req)
    if is_reduce(req) and not req.close_position and req.type not in STOP_TYPES:
        room = closable(trading, account, req.symbol, req.side, req.position_side)
        pending = sum(o.remaining for o in resting_reduce(
            trading, account, req.symbol, req.side, req.position_side))
        if room == 0 or req.qty + pending > room:
            raise OrderError(-2022, "ReduceOnly Order is rejected.")


def check_trailing(state: MarketState, req: OrderRequest) -> None:
    """``callbackRate`` is required and valid; ``activationPrice`` lies on the price grid."""
    if req.callback_rate is None:
        raise OrderError(-1102, "Mandatory parameter 'callbackRate' was not sent, was "
                                "empty/null, or malformed.")
    if permille(req.callback_rate) is None:
        raise OrderError(-1130, "Data sent for parameter 'callbackRate' is not valid.")
    m = state.market
    act = req.activation_price
    if act is not None and (act < m.min_price or act > m.max_price
                            or (act - m.min_price) % m.tick):
        raise OrderError(-4135, "Invalid activation price")


def fit_triggered(trading: PerpSide, order: UserOrder) -> bool:
    """Size a conditional order that just fired (``order.triggered`` already set): a reducing
    one to what it can still close, an opening one margin-checked. False: it expires."""
    if is_reduce(order):
        room = closable(trading, order.account, order.symbol, order.side, order.position_side)
        room -= sum(o.remaining for o in resting_reduce(
            trading, order.account, order.symbol, order.side, order.position_side,
            exclude=order))
        qty = room if order.close_position else min(order.orig_qty, room)
        if qty <= 0:
            return False
        order.orig_qty = qty
        return True
    try:
        check_margin(trading, order)
    except OrderError:
        return False
    return True


def trailing_triggered(order: UserOrder, price: int, *, initial: bool) -> bool:
    """Whether a ``TRAILING_STOP_MARKET`` fires at ``price`` (its trigger price now); tracks
    its activation and the extreme seen since on the order."""
    buy = order.side == BUY
    act = order.activation_price
    if order.extreme is None:
        if act is None or (price <= act if buy else price >= act):
            if initial and act is not None:
                return True  # the docs: a BUY activates below, a SELL above the latest price
            order.extreme = price  # activated (without activationPrice: at once)
            if act is None:
                order.activation_price = price  # reported as activatePrice
        return False
    order.extreme = min(order.extreme, price) if buy else max(order.extreme, price)
    rate = permille(order.callback_rate or "") or 0
    if buy:
        return price * 1000 >= order.extreme * (1000 + rate)
    return price * 1000 <= order.extreme * (1000 - rate)
